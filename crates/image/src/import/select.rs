//! Platform selection and name normalisation for import.
//!
//! Platforms are compared after normalising architecture aliases the way containerd's
//! `platforms` package does (`x86_64` = `amd64`, `aarch64` = `arm64` with variant `v8` by
//! default, `armhf` = `arm` v7, …). The host's platform is the one this binary was built for.

use std::fmt;

use berth_oci::ImageConfiguration;
use oci_spec::image::{Arch, Os};

use super::error::{Error, Result};

/// A platform: OS, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// The OS (`linux`).
    pub os: String,
    /// The architecture, normalised (`amd64`, `arm64`, `arm`, …).
    pub architecture: String,
    /// The variant, normalised (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .map(str::to_ascii_lowercase)
        .filter(|v| !v.is_empty());
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => {
            let v = match variant.as_deref() {
                None | Some("8") | Some("v8") => Some("v8".into()),
                Some(other) => Some(other.to_owned()),
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") | Some("v7") => Some("v7".into()),
                Some("5") | Some("6") | Some("8") => variant.map(|v| format!("v{v}")),
                Some(other) => Some(other.to_owned()),
            };
            ("arm".into(), v)
        }
        "i386" | "i686" | "386" => ("386".into(), None),
        other => (other.to_owned(), variant),
    }
}

impl Platform {
    /// A normalised platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// The platform of the running host.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, None)
    }

    /// Parses `os[/arch[/variant]]` or `arch` alone (OS linux), normalising aliases.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty part or more than three parts.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidArgument {
            what: format!("platform {s:?}"),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid("empty component"));
        }
        match parts.as_slice() {
            [one] if matches!(*one, "linux" | "windows" | "darwin" | "freebsd") => {
                let host = Platform::host();
                Ok(Platform::new(
                    one,
                    &host.architecture,
                    host.variant.as_deref(),
                ))
            }
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(invalid("expected os/arch[/variant]")),
        }
    }

    /// Whether an image for `other` runs here when this is the wanted platform: same OS and
    /// architecture, and the variant equal, absent on `other`, or (for arm) older.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        match (&self.variant, &other.variant) {
            (_, None) | (None, _) => true,
            (Some(a), Some(b)) if a == b => true,
            (Some(a), Some(b)) if self.architecture == "arm" => variant_rank(b) <= variant_rank(a),
            _ => false,
        }
    }
}

fn variant_rank(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

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
    fn wanted(&self) -> Option<Platform> {
        match self {
            PlatformChoice::Host => Some(Platform::host()),
            PlatformChoice::Only(p) => Some(p.clone()),
            PlatformChoice::All => None,
        }
    }

    /// Whether an image for `platform` is wanted.
    pub fn accepts(&self, platform: &Platform) -> bool {
        self.wanted().is_none_or(|w| w.matches(platform))
    }

    /// Whether every platform is wanted.
    pub fn is_all(&self) -> bool {
        matches!(self, PlatformChoice::All)
    }

    /// Orders index entries best match first: an exact variant before an older or absent one.
    pub(crate) fn sort_best_first(&self, entries: &mut [&berth_oci::Descriptor]) {
        let Some(wanted) = self.wanted() else { return };
        entries.sort_by_key(|d| {
            let p = descriptor_platform(d);
            let exact = p.as_ref().is_some_and(|p| p.variant == wanted.variant);
            let rank = p.and_then(|p| p.variant).map_or(0, |v| variant_rank(&v));
            (std::cmp::Reverse(exact), std::cmp::Reverse(rank))
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

fn from_spec(p: &oci_spec::image::Platform) -> Platform {
    Platform::new(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref(),
    )
}

/// The platform an index entry declares, if any.
pub(crate) fn descriptor_platform(d: &berth_oci::Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(from_spec)
}

/// The platform an image config declares.
pub(crate) fn platform_of_config(c: &ImageConfiguration) -> Platform {
    Platform::new(
        &c.os().to_string(),
        &c.architecture().to_string(),
        c.variant().as_deref(),
    )
}

/// The oci-spec form of a platform, for descriptors.
pub(crate) fn to_spec_platform(p: &Platform) -> oci_spec::image::Platform {
    let mut out = oci_spec::image::Platform::default();
    out.set_os(Os::from(p.os.as_str()));
    out.set_architecture(Arch::from(p.architecture.as_str()));
    out.set_variant(p.variant.clone());
    out
}

/// Normalises an image reference: `busybox` → `docker.io/library/busybox:latest`,
/// `example.com:5000/x` → `example.com:5000/x:latest`; a digest reference stays as it is.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty name, upper-case repository, or bad characters.
pub(crate) fn normalize_reference(s: &str) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidArgument {
        what: format!("image reference {s:?}"),
        reason: reason.to_owned(),
    };
    if s.is_empty() || s.len() > 255 {
        return Err(invalid("empty or longer than 255 characters"));
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => {
            d.parse::<berth_oci::Digest>()
                .map_err(|_| invalid("bad digest"))?;
            (n, Some(d))
        }
        None => (s, None),
    };
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    if let Some(t) = tag
        && (t.is_empty()
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid("bad tag"));
    }
    let (domain, path) = match repo.split_once('/') {
        Some((d, rest)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), repo.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_owned()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.is_empty()
        || path.split('/').any(|c| {
            c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        })
    {
        return Err(invalid(
            "repository must be lower-case letters, digits and ._-",
        ));
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// The tag of a normalised reference, if it has one.
pub(crate) fn tag_of(name: &str) -> Option<String> {
    let name = name.split('@').next().unwrap_or(name);
    let i = name.rfind(':')?;
    let tag = &name[i + 1..];
    (!tag.contains('/')).then(|| tag.to_owned())
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
        for bad in ["", "Busybox", "a//b", "x:", "x:bad tag"] {
            assert!(normalize_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(
            tag_of("docker.io/library/busybox:1.36").as_deref(),
            Some("1.36")
        );
        assert_eq!(tag_of("localhost:5000/x"), None);
    }

    #[test]
    fn platforms_parse_normalize_and_match() {
        let p = Platform::parse("linux/aarch64").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux/arm64/v8").unwrap().matches(&p));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(!Platform::parse("linux/arm/v6").unwrap().matches(&v7));
        assert_eq!(
            Platform::parse("x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(!p.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux//x").is_err());
        assert!(PlatformChoice::All.accepts(&p));
        assert!(PlatformChoice::Only(p.clone()).accepts(&p));
    }
}
