//! Platforms (`os/arch[/variant]`): parsing, normalisation and matching like containerd's
//! `platforms` package.
//!
//! # Canonical form
//! [`Platform::normalize`] lowercases and maps aliases the way containerd does: `x86_64` and
//! `x86-64` → `amd64` (variant `v1` is the default and dropped), `aarch64` → `arm64` (variant
//! `v8` is the default and dropped, `8`/`v8.0` likewise), `armhf` → `arm/v7`, `armel` → `arm/v6`,
//! `i386` → `386`, plain `arm` → `arm/v7`, and `macos` → `darwin`. Parsing always yields the
//! canonical form, so `linux/arm64/v8` and `linux/aarch64` parse to the same value, displayed
//! `linux/arm64`.
//!
//! # Matching
//! A [`Matcher`] built by [`Matcher::only`] accepts the platform itself and, with lower priority,
//! what that platform can also run, in containerd's order: `amd64/vN` also runs `amd64/vN-1` …
//! `v1`, then `386`; `arm/vN` also runs `arm/vN-1` … `v5`; `arm64/v8.x`/`v9.x` run the lower
//! arm64 revisions, then `arm/v8` … `arm/v5`. [`Matcher::rank`] and [`Matcher::less`] order
//! candidates so that the best entry of an index can be chosen ([`Matcher::best`]).
//! OS versions are carried but not compared (berth runs Linux containers only).
//!
//! Nothing here does I/O: the host platform comes from the compile target
//! (`std::env::consts` and target features).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

mod matcher;

pub use matcher::Matcher;

/// Operating systems Go (and so containerd) knows; a lone word naming one parses as an OS.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go knows (normalised names); a lone word naming one parses as an architecture.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// A target platform of an image or a host: OS, CPU architecture and optional refinements.
///
/// Field values follow the OCI image spec (Go's `GOOS`/`GOARCH` names). Equality compares the
/// fields as stored; compare through [`Platform::normalize`] or a [`Matcher`] to treat aliases
/// alike.
///
/// Serialised as the OCI platform object (`{"architecture": …, "os": …, "variant": …,
/// "os.version": …, "os.features": […]}`); deserialised from that object or from a specifier
/// string such as `"linux/arm64"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`, `arm`).
    pub architecture: String,
    /// CPU variant (`v7` for arm, `v8.2` for arm64, `v3` for amd64), if any.
    pub variant: Option<String>,
    /// OS version (used by Windows images), if any.
    pub os_version: Option<String>,
    /// Required OS features (used by Windows images).
    pub os_features: Vec<String>,
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

/// containerd's OS normalisation (lowercase; `macos` → `darwin`).
fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// containerd's architecture/variant normalisation; an empty variant means none.
pub(crate) fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = match variant.as_str() {
                "v1" | "1" => String::new(),
                "2" | "3" | "4" => format!("v{variant}"),
                _ => variant,
            };
            ("amd64".to_owned(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "8.0" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                v if v.starts_with(|c: char| c.is_ascii_digit()) => format!("v{v}"),
                _ => variant,
            };
            ("arm64".to_owned(), variant)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_owned(), variant)
        }
        _ => (arch, variant),
    }
}

/// A specifier component: `[A-Za-z0-9_.-]+` (dots for variants such as `v8.2`).
fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Splits `os(version)` into its parts.
fn split_os_version(part: &str) -> Option<(&str, Option<&str>)> {
    match part.split_once('(') {
        None => valid_component(part).then_some((part, None)),
        Some((os, rest)) => {
            let version = rest.strip_suffix(')')?;
            let version_ok = !version.is_empty()
                && version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            (valid_component(os) && version_ok).then_some((os, Some(version)))
        }
    }
}

/// The Go architecture name of the compile target.
fn host_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips" if little => "mipsle",
        "mips64" if little => "mips64le",
        "loongarch64" => "loong64",
        "wasm32" => "wasm",
        other => other,
    }
}

/// The 32-bit ARM revision of the compile target (containerd reads `/proc/cpuinfo`; berth does
/// no I/O here and uses the target features the binary was built for).
fn host_arm_variant() -> &'static str {
    if cfg!(target_feature = "v8") {
        "v8"
    } else if cfg!(target_feature = "v7") {
        "v7"
    } else if cfg!(target_feature = "v6") {
        "v6"
    } else {
        "v5"
    }
}

impl Platform {
    /// A platform from its three main fields, as given (not normalised).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: non_empty(variant),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// Parses a specifier `<os>[(<os version>)]`, `<arch>`, or
    /// `<os>[(<os version>)]/<arch>[/<variant>]` into the canonical form.
    ///
    /// A single word naming a known OS takes the host's architecture (and arm variant); any other
    /// single word must be a known architecture and takes the host's OS (so `amd64` →
    /// `linux/amd64` on Linux). Components are `[A-Za-z0-9_.-]+`, compared case-insensitively.
    ///
    /// # Errors
    /// [`Error::InvalidPlatform`] for wildcards, empty or invalid components, more than three
    /// components, or a lone word that is neither a known OS nor a known architecture.
    pub fn parse(specifier: &str) -> Result<Self> {
        let fail = |reason: &str| Error::InvalidPlatform {
            platform: specifier.to_owned(),
            reason: reason.to_owned(),
        };
        if specifier.contains('*') {
            return Err(fail("wildcards are not supported"));
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        if parts.len() > 3 {
            return Err(fail("more than three components (os/arch/variant)"));
        }
        let (os, os_version) = split_os_version(parts[0])
            .ok_or_else(|| fail("invalid OS component (expected [A-Za-z0-9_.-]+[(version)])"))?;
        if let Some(bad) = parts[1..].iter().find(|p| !valid_component(p)) {
            return Err(fail(&format!(
                "invalid component {bad:?} (expected [A-Za-z0-9_.-]+)"
            )));
        }
        let mut platform = match parts.len() {
            1 => {
                let word = normalize_os(os);
                if KNOWN_OS.contains(&word.as_str()) {
                    let host = Self::host();
                    Platform {
                        os: word,
                        architecture: host.architecture,
                        variant: host.variant,
                        os_version: None,
                        os_features: Vec::new(),
                    }
                } else if os_version.is_some() {
                    return Err(fail("an OS version needs a known OS"));
                } else {
                    let (arch, _) = normalize_arch(os, "");
                    if !KNOWN_ARCH.contains(&arch.as_str()) {
                        return Err(fail("unknown operating system or architecture"));
                    }
                    Platform::new(&Self::host().os, os, None)
                }
            }
            2 => Platform::new(os, parts[1], None),
            _ => Platform::new(os, parts[1], Some(parts[2])),
        };
        platform.os_version = os_version.map(str::to_owned);
        Ok(platform.normalize())
    }

    /// The canonical form (see the module docs): lowercase, aliases mapped, default variants
    /// of amd64 (`v1`) and arm64 (`v8`) dropped, and arm's default `v7` made explicit.
    pub fn normalize(&self) -> Platform {
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        Platform {
            os: normalize_os(&self.os),
            architecture,
            variant: non_empty(Some(&variant)),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// The platform this binary runs on, in canonical form: the OS and architecture of the
    /// compile target with Go's names, and for 32-bit ARM the revision the binary targets.
    pub fn host() -> Platform {
        let arch = host_arch();
        let variant = (arch == "arm").then(host_arm_variant);
        Platform::new(std::env::consts::OS, arch, variant).normalize()
    }

    /// The platform an image config declares (its `os`, `architecture`, `variant`,
    /// `os.version`, `os.features`), as given.
    pub fn from_config(config: &oci_spec::image::ImageConfiguration) -> Platform {
        Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: non_empty(config.variant().as_deref()),
            os_version: non_empty(config.os_version().as_deref()),
            os_features: config.os_features().clone().unwrap_or_default(),
        }
    }

    /// This platform as an `oci-spec` platform (for descriptors in an index).
    ///
    /// # Errors
    /// [`Error::InvalidPlatform`] when the OS or architecture is empty.
    pub fn to_oci(&self) -> Result<oci_spec::image::Platform> {
        use oci_spec::image::{Arch, Os, PlatformBuilder};
        if self.os.is_empty() || self.architecture.is_empty() {
            return Err(Error::InvalidPlatform {
                platform: self.to_string(),
                reason: "OS and architecture are required".to_owned(),
            });
        }
        // oci-spec 0.10 maps "armbe" to Arch::ARM64be; keep the name as written instead.
        let arch = match self.architecture.as_str() {
            "armbe" => Arch::Other("armbe".to_owned()),
            a => Arch::from(a),
        };
        let mut builder = PlatformBuilder::default()
            .os(Os::from(self.os.as_str()))
            .architecture(arch);
        if let Some(v) = &self.variant {
            builder = builder.variant(v.clone());
        }
        if let Some(v) = &self.os_version {
            builder = builder.os_version(v.clone());
        }
        if !self.os_features.is_empty() {
            builder = builder.os_features(self.os_features.clone());
        }
        builder.build().map_err(|e| Error::InvalidPlatform {
            platform: self.to_string(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Display for Platform {
    /// `os[(os version)]/arch[/variant]`, or `unknown` without an OS (containerd's `FormatAll`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() {
            return f.write_str("unknown");
        }
        f.write_str(&self.os)?;
        if let Some(v) = &self.os_version {
            write!(f, "({v})")?;
        }
        if !self.architecture.is_empty() {
            write!(f, "/{}", self.architecture)?;
        }
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Self {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: non_empty(p.variant().as_deref()),
            os_version: non_empty(p.os_version().as_deref()),
            os_features: p.os_features().clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&Platform> for oci_spec::image::Platform {
    type Error = Error;

    fn try_from(p: &Platform) -> Result<Self> {
        p.to_oci()
    }
}

/// The OCI JSON shape of a platform.
#[derive(Serialize, Deserialize)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    os_features: Vec<String>,
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        PlatformJson {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Specifier(String),
            Object(PlatformJson),
        }
        match Either::deserialize(d)? {
            Either::Specifier(s) => Platform::parse(&s).map_err(serde::de::Error::custom),
            Either::Object(o) => Ok(Platform {
                os: o.os,
                architecture: o.architecture,
                variant: non_empty(o.variant.as_deref()),
                os_version: non_empty(o.os_version.as_deref()),
                os_features: o.os_features,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_common_specifiers() {
        let host = Platform::host();
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/X86-64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/8", "linux/arm64"),
            ("linux/arm64/v8.2", "linux/arm64/v8.2"),
            ("linux/arm64/9", "linux/arm64/v9"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/arm/5", "linux/arm/v5"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("linux/386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("macos/arm64", "darwin/arm64"),
            ("windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64"),
        ] {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        // A lone architecture takes the host OS.
        assert_eq!(p("amd64"), Platform::new(&host.os, "amd64", None));
        assert_eq!(p("aarch64").architecture, "arm64");
        assert_eq!(p("armhf").variant.as_deref(), Some("v7"));
        // A lone OS takes the host architecture.
        let linux = p("linux");
        assert_eq!(linux.os, "linux");
        assert_eq!(linux.architecture, host.architecture);
        assert_eq!(linux.variant, host.variant);
        assert_eq!(p("windows(10.0)/amd64").os_version.as_deref(), Some("10.0"));
    }

    #[test]
    fn rejects_bad_specifiers() {
        for bad in [
            "",
            "/",
            "linux/",
            "/amd64",
            "linux/amd64/v8/extra",
            "linux/*",
            "*",
            "notanos",
            "linux/amd 64",
            "linux(/amd64",
            "linux()/amd64",
            "frob(1.0)",
            "linux/amd64\n",
        ] {
            let err = Platform::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(
                matches!(&err, Error::InvalidPlatform { platform, .. } if platform == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn normalize_maps_aliases_and_defaults() {
        let raw = Platform::new("Linux", "AArch64", Some("V8"));
        assert_eq!(raw.normalize(), Platform::new("linux", "arm64", None));
        assert_eq!(
            Platform::new("linux", "arm", None).normalize(),
            Platform::new("linux", "arm", Some("v7"))
        );
        assert_eq!(
            Platform::new("linux", "x86_64", Some("v1")).normalize(),
            Platform::new("linux", "amd64", None)
        );
        assert_eq!(
            Platform::new("linux", "i386", Some("whatever")).normalize(),
            Platform::new("linux", "386", None)
        );
        // Unknown architectures pass through, lowercased.
        assert_eq!(
            Platform::new("linux", "NewArch", Some("X")).normalize(),
            Platform::new("linux", "newarch", Some("x"))
        );
    }

    #[test]
    fn host_is_canonical_and_known() {
        let host = Platform::host();
        assert_eq!(host, host.normalize());
        assert_eq!(host.os, std::env::consts::OS);
        assert!(KNOWN_ARCH.contains(&host.architecture.as_str()), "{host}");
        if host.architecture == "arm" {
            assert!(host.variant.is_some());
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64");
        assert!(Matcher::host().matches(&host));
        assert_eq!(Matcher::default(), Matcher::host());
    }

    #[test]
    fn converts_with_oci_spec_and_config() {
        let ours = Platform {
            os: "windows".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
            os_version: Some("10.0.17763".to_owned()),
            os_features: vec!["win32k".to_owned()],
        };
        let theirs = ours.to_oci().unwrap();
        assert_eq!(theirs.os_version().as_deref(), Some("10.0.17763"));
        assert_eq!(Platform::from(&theirs), ours);
        let arm = p("linux/arm/v7");
        assert_eq!(
            Platform::from(&oci_spec::image::Platform::try_from(&arm).unwrap()),
            arm
        );
        let armbe = Platform::new("linux", "armbe", None);
        assert_eq!(Platform::from(&armbe.to_oci().unwrap()), armbe);
        assert!(Platform::new("", "amd64", None).to_oci().is_err());

        let config: oci_spec::image::ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let from_config = Platform::from_config(&config);
        assert_eq!(from_config, Platform::new("linux", "arm64", Some("v8")));
        assert!(Matcher::only(&p("linux/arm64")).matches(&from_config));
    }

    #[test]
    fn serde_uses_the_oci_shape_and_accepts_specifiers() {
        let v7 = p("linux/arm/v7");
        let json = serde_json::to_string(&v7).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"arm","os":"linux","variant":"v7"}"#
        );
        assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), v7);
        assert_eq!(
            serde_json::from_str::<Platform>(r#""linux/armhf""#).unwrap(),
            v7
        );
        let full = r#"{"architecture":"amd64","os":"windows","os.version":"10.0","os.features":["win32k"]}"#;
        let w: Platform = serde_json::from_str(full).unwrap();
        assert_eq!(w.os_features, vec!["win32k"]);
        assert_eq!(serde_json::to_string(&w).unwrap(), full);
        assert!(serde_json::from_str::<Platform>(r#""linux/*""#).is_err());
        assert!(serde_json::from_str::<Platform>(r#"{"os":"linux"}"#).is_err());
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap(),
            p("linux/arm64")
        );
        assert_eq!(Platform::default().to_string(), "unknown");
    }
}
