//! Image references (`busybox`, `registry:5000/team/app:1.2`, `app@sha256:…`), parsed with the
//! distribution grammar and normalised the way Docker and containerd do.
//!
//! Normalisation: a name without a registry domain gets `docker.io`; a single-component name on
//! `docker.io` gets the `library/` namespace; `index.docker.io` becomes `docker.io`; a reference
//! with neither tag nor digest gets the tag `latest`. So `busybox` is
//! `docker.io/library/busybox:latest`, and [`Reference::familiar`] turns that back into
//! `busybox:latest`.
//!
//! The first path component is taken as the domain when it contains a `.` or `:`, is
//! `localhost`, or contains an uppercase letter (repository paths must be lowercase), as in
//! Docker's `splitDockerDomain`.
//!
//! Grammar checked (distribution's `reference` package): domain components
//! `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?` joined by `.`, or a bracketed IPv6 address, with an
//! optional numeric port; path components `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`;
//! tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; the full name at most 255 characters; digests
//! sha256/sha512 ([`Digest`]). A bare 64-hex string is refused, since it would be mistaken for an
//! image ID.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The default registry domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of the default registry, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on the default registry.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag given to references with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest full name (`domain/path`) accepted.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The longest tag accepted.
pub const TAG_LENGTH_MAX: usize = 128;

/// A parsed, validated and normalised image reference.
///
/// Ordering and equality compare the normalised parts, so `busybox` equals
/// `docker.io/library/busybox:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn fail(reference: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `host[:port]` where host is a domain name or a bracketed IPv6 address.
fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((ipv6, after)) = rest.split_once(']') else {
            return false;
        };
        let ipv6_ok = !ipv6.is_empty() && ipv6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        if !ipv6_ok {
            return false;
        }
        match after {
            "" => return true,
            a => match a.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    domain.starts_with('[') || host.split('.').all(is_domain_component)
}

/// One path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-+`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_valid_tag(tag: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Splits a name into domain and path, as Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO_PREFIX}{path}");
    }
    (domain, path)
}

impl Reference {
    /// Parses and normalises a reference (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidReference`] naming the input and what is wrong: empty, a bare 64-hex
    /// ID, an invalid or uppercase path, an invalid domain or port, a tag that is empty,
    /// too long or has invalid characters, a name over 255 characters, or a digest that is not
    /// a valid sha256/sha512 digest.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(fail(s, "empty reference"));
        }
        if is_hex64(s) {
            return Err(fail(
                s,
                "a 64-character hexadecimal string is an image ID, not a repository name",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|e| fail(s, format!("invalid digest: {e}")))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if rest.rfind('/').is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(fail(s, "empty repository name"));
        }
        if let Some(tag) = tag
            && !is_valid_tag(tag)
        {
            return Err(fail(
                s,
                format!(
                    "invalid tag {tag:?}: expected [A-Za-z0-9_][A-Za-z0-9_.-]* of at most {TAG_LENGTH_MAX} characters"
                ),
            ));
        }
        let (domain, path) = split_domain(name);
        if !is_valid_domain(&domain) {
            return Err(fail(s, format!("invalid registry domain {domain:?}")));
        }
        if path.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(fail(s, "repository name must be lowercase"));
        }
        if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(fail(
                s,
                format!(
                    "invalid path component {bad:?}: expected [a-z0-9]+ joined by '.', '_', '__' or '-'"
                ),
            ));
        }
        let full_len = domain.len() + 1 + path.len();
        if full_len > NAME_TOTAL_LENGTH_MAX {
            return Err(fail(
                s,
                format!(
                    "repository name is {full_len} characters, the limit is {NAME_TOTAL_LENGTH_MAX}"
                ),
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry domain, with port if any (`docker.io`, `registry:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name, `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if any (`latest` was added when the input had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The short repository name Docker shows: `docker.io/` and the `library/` namespace are
    /// dropped (`busybox`, `user/repo`, `registry:5000/repo`).
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(short) if !short.contains('/') => short.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The short form of the whole reference: [`Reference::familiar_name`] with the tag and
    /// digest (`busybox:latest`, `user/repo@sha256:…`).
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        self.push_tag_and_digest(&mut s);
        s
    }

    /// The same repository with `tag` (keeping the digest, if any).
    ///
    /// # Errors
    /// [`Error::InvalidReference`] when the tag is invalid.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !is_valid_tag(tag) {
            return Err(fail(&format!("{}:{tag}", self.name()), "invalid tag"));
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same repository and tag pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The normalised full form: `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_tag_and_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn normalises_like_docker() {
        for (input, full, familiar) in [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
                "busybox:1",
            ),
            (
                "user/repo",
                "docker.io/user/repo:latest",
                "user/repo:latest",
            ),
            (
                "user/repo/sub:t",
                "docker.io/user/repo/sub:t",
                "user/repo/sub:t",
            ),
            (
                "library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            (
                "registry:5000/repo:tag",
                "registry:5000/repo:tag",
                "registry:5000/repo:tag",
            ),
            (
                "registry:5000/repo",
                "registry:5000/repo:latest",
                "registry:5000/repo:latest",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/a/b:v1.0",
                "localhost:5000/a/b:v1.0",
                "localhost:5000/a/b:v1.0",
            ),
            (
                "quay.io/org/app_x.y-z__w",
                "quay.io/org/app_x.y-z__w:latest",
                "quay.io/org/app_x.y-z__w:latest",
            ),
            (
                "[::1]:5000/repo",
                "[::1]:5000/repo:latest",
                "[::1]:5000/repo:latest",
            ),
            ("[fe80::1]/repo:t", "[fe80::1]/repo:t", "[fe80::1]/repo:t"),
            (
                "My.Registry.io/repo",
                "My.Registry.io/repo:latest",
                "My.Registry.io/repo:latest",
            ),
            (
                "docker.io/anchors/busybox:latest",
                "docker.io/anchors/busybox:latest",
                "anchors/busybox:latest",
            ),
        ] {
            let parsed = r(input);
            assert_eq!(parsed.to_string(), full, "{input}");
            assert_eq!(parsed.familiar(), familiar, "{input}");
            // The normalised form parses to itself, and so does the familiar form.
            assert_eq!(r(full), parsed, "{input}");
            assert_eq!(r(familiar), parsed, "{input}");
        }
    }

    #[test]
    fn accessors_and_digests() {
        let b = r("busybox");
        assert_eq!(b.domain(), "docker.io");
        assert_eq!(b.path(), "library/busybox");
        assert_eq!(b.name(), "docker.io/library/busybox");
        assert_eq!(b.tag(), Some("latest"));
        assert_eq!(b.digest(), None);
        assert_eq!(b.familiar_name(), "busybox");

        let pinned = r(&format!("repo@sha256:{HEX}"));
        assert_eq!(pinned.tag(), None, "no latest added to a digest reference");
        assert_eq!(pinned.digest().unwrap().hex(), HEX);
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/repo@sha256:{HEX}")
        );
        assert_eq!(pinned.familiar(), format!("repo@sha256:{HEX}"));

        let both = r(&format!("registry:5000/repo:tag@sha256:{HEX}"));
        assert_eq!(both.domain(), "registry:5000");
        assert_eq!(both.path(), "repo");
        assert_eq!(both.tag(), Some("tag"));
        assert_eq!(both.digest().unwrap().hex(), HEX);
        assert_eq!(
            both.to_string(),
            format!("registry:5000/repo:tag@sha256:{HEX}")
        );

        let retagged = b.with_tag("1.36").unwrap();
        assert_eq!(retagged.to_string(), "docker.io/library/busybox:1.36");
        assert!(b.with_tag("-bad").is_err());
        let d = Digest::sha256(b"x");
        assert_eq!(b.with_digest(d.clone()).digest(), Some(&d));
    }

    #[test]
    fn rejects_invalid_references() {
        let long_tag = "t".repeat(TAG_LENGTH_MAX + 1);
        let max_tag = "t".repeat(TAG_LENGTH_MAX);
        assert!(Reference::parse(&format!("repo:{max_tag}")).is_ok());
        let long_name = format!("a/{}", "b".repeat(NAME_TOTAL_LENGTH_MAX));
        for bad in [
            "",
            ":tag",
            "@sha256:abc",
            "Busybox",
            "user/Repo",
            "repo:",
            "repo:-tag",
            "repo:.tag",
            "repo:ta g",
            &format!("repo:{long_tag}"),
            &long_name,
            "repo@sha256:short",
            &format!("repo@md5:{HEX}"),
            &format!("repo@sha256:{}", HEX.to_uppercase()),
            "repo/",
            "/repo",
            "a//b",
            "repo_",
            "_repo",
            "re..po",
            "re___po",
            "-repo",
            "reg:port/repo",
            "reg:/repo",
            "-reg.io/repo",
            "reg-.io/repo",
            "reg..io/repo",
            "[::1/repo",
            "[zz::1]/repo",
            "[::1]x/repo",
            "repo:tag:more",
            "repo@sha256:abc@sha256:def",
            HEX,
            "domain.io/repo\n",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(
                matches!(&err, Error::InvalidReference { reference, .. } if reference == bad),
                "{bad:?}: {err}"
            );
        }
        assert!(
            Reference::parse("user/Repo")
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
    }

    #[test]
    fn serde_round_trip() {
        let refs = vec![r("busybox"), r(&format!("reg.io/a/b:c@sha256:{HEX}"))];
        let json = serde_json::to_string(&refs).unwrap();
        assert_eq!(
            json,
            format!(r#"["docker.io/library/busybox:latest","reg.io/a/b:c@sha256:{HEX}"]"#)
        );
        assert_eq!(serde_json::from_str::<Vec<Reference>>(&json).unwrap(), refs);
        assert!(serde_json::from_str::<Reference>(r#""Bad""#).is_err());
        assert_eq!("busybox".parse::<Reference>().unwrap(), r("busybox"));
    }
}
