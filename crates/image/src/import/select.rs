//! Platform selection and name normalisation for import, over `berth_oci`'s [`Platform`],
//! [`Matcher`] (containerd's `platforms` semantics: aliases normalised, arm variants ranked)
//! and [`Reference`] (docker normalisation: `busybox` → `docker.io/library/busybox:latest`).

use std::fmt;

use berth_oci::{ImageConfiguration, Matcher, Reference};

pub use berth_oci::Platform;

use super::error::Result;

/// Which platforms of an image to import.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PlatformChoice {
    /// The host's platform ([`Platform::host`]).
    #[default]
    Host,
    /// One platform.
    Only(Platform),
    /// Every platform: indexes are imported whole.
    All,
}

impl PlatformChoice {
    /// The matcher for this choice.
    pub fn matcher(&self) -> Matcher {
        match self {
            PlatformChoice::Host => Matcher::host(),
            PlatformChoice::Only(p) => Matcher::only(p),
            PlatformChoice::All => Matcher::all(),
        }
    }

    /// Whether an image for `platform` is wanted.
    pub fn accepts(&self, platform: &Platform) -> bool {
        self.matcher().matches(platform)
    }

    /// Whether every platform is wanted.
    pub fn is_all(&self) -> bool {
        matches!(self, PlatformChoice::All)
    }

    /// Orders index entries best match first (stable among equals).
    pub(crate) fn sort_best_first(&self, entries: &mut [&berth_oci::Descriptor]) {
        let matcher = self.matcher();
        entries.sort_by_key(|d| {
            descriptor_platform(d)
                .and_then(|p| matcher.rank(&p))
                .unwrap_or(usize::MAX)
        });
    }
}

impl fmt::Display for PlatformChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformChoice::Host => write!(f, "{} (host)", Platform::host()),
            PlatformChoice::Only(p) => write!(f, "{p}"),
            PlatformChoice::All => f.write_str("all"),
        }
    }
}

/// The platform an index entry declares, if any.
pub(crate) fn descriptor_platform(d: &berth_oci::Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(Platform::from)
}

/// The platform an image config declares.
pub(crate) fn platform_of_config(c: &ImageConfiguration) -> Platform {
    Platform::from_config(c)
}

/// The oci-spec form of a platform, for descriptors.
pub(crate) fn to_spec_platform(p: &Platform) -> Result<oci_spec::image::Platform> {
    Ok(p.to_oci()?)
}

/// Normalises an image reference: `busybox` → `docker.io/library/busybox:latest`.
///
/// # Errors
/// [`super::Error::Oci`] with `InvalidReference` when it does not parse.
pub(crate) fn normalize_reference(s: &str) -> Result<String> {
    Ok(Reference::parse(s)?.to_string())
}

/// The tag of a reference, if it has one.
pub(crate) fn tag_of(name: &str) -> Option<String> {
    Reference::parse(name).ok()?.tag().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_references() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("anchors/busybox", "docker.io/anchors/busybox:latest"),
            (
                "docker.io/anchors/busybox:latest",
                "docker.io/anchors/busybox:latest",
            ),
            ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
            (
                "berth-demo/busybox:latest",
                "docker.io/berth-demo/busybox:latest",
            ),
        ] {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
        for bad in ["", "Busybox", "a//b", "x:"] {
            assert!(normalize_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(
            tag_of("docker.io/library/busybox:1.36").as_deref(),
            Some("1.36")
        );
        // A reference without a tag is normalised to :latest.
        assert_eq!(tag_of("localhost:5000/x").as_deref(), Some("latest"));
        assert_eq!(tag_of("Not A Reference"), None);
    }

    #[test]
    fn platform_choices() {
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(PlatformChoice::All.accepts(&arm));
        assert!(
            PlatformChoice::Only(arm.clone()).accepts(&Platform::parse("linux/aarch64").unwrap())
        );
        assert!(!PlatformChoice::Only(arm).accepts(&Platform::parse("linux/amd64").unwrap()));
        assert!(PlatformChoice::Host.accepts(&Platform::host()));
    }
}
