//! The `manifest.json` of a docker-archive (`docker save`, `skopeo copy … docker-archive:`).
//!
//! The file is a JSON array with one entry per image:
//! `[{"Config": "<path>", "RepoTags": ["name:tag"], "Layers": ["<path>", …], "LayerSources": {…}}]`.
//! The paths name members of the same tar. They come from an untrusted archive, so
//! [`parse_manifest_json`] refuses absolute paths, `..` components and other tricks before any
//! caller uses them, and [`archive_path`] gives their normalised form for lookup among the tar's
//! members. The legacy per-layer directories (`<id>/layer.tar`, `<id>/json`) and the
//! `repositories` file are the importer's business, not this module's.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, check_document_size};
use crate::reference::Reference;

/// One image of a docker-archive, as listed in its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    /// Path of the image config inside the archive (`<hex>.json`, or `blobs/sha256/<hex>`
    /// in archives written by Docker 25 and later).
    pub config: String,
    /// The image's names (`busybox:latest`, `docker.io/library/busybox:latest`); empty when the
    /// image was saved by ID (Docker writes `null` then, which reads as empty).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// Paths of the layer tars inside the archive, bottom layer first.
    pub layers: Vec<String>,
    /// Descriptors of foreign layers keyed by diffID, when the saver recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_sources: Option<BTreeMap<Digest, Descriptor>>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl DockerArchiveEntry {
    /// Checks every path the entry names ([`archive_path`]) and that it names at least a config.
    ///
    /// # Errors
    /// [`Error::InvalidArchivePath`] for the first unsafe path, naming it.
    pub fn validate(&self) -> Result<()> {
        archive_path(&self.config)?;
        for layer in &self.layers {
            archive_path(layer)?;
        }
        Ok(())
    }

    /// The normalised config path (see [`archive_path`]).
    ///
    /// # Errors
    /// [`Error::InvalidArchivePath`] when the path is unsafe.
    pub fn config_path(&self) -> Result<String> {
        archive_path(&self.config)
    }

    /// The image's names parsed and normalised as [`Reference`]s (`busybox:latest` →
    /// `docker.io/library/busybox:latest`).
    ///
    /// # Errors
    /// [`Error::InvalidReference`] for the first name that is not a valid reference.
    pub fn references(&self) -> Result<Vec<Reference>> {
        self.repo_tags.iter().map(|t| Reference::parse(t)).collect()
    }

    /// The normalised layer paths, bottom layer first (see [`archive_path`]).
    ///
    /// # Errors
    /// [`Error::InvalidArchivePath`] for the first unsafe path.
    pub fn layer_paths(&self) -> Result<Vec<String>> {
        self.layers.iter().map(|l| archive_path(l)).collect()
    }
}

/// Decodes and validates a docker-archive `manifest.json`.
///
/// # Errors
/// [`Error::TooLarge`] over the 4 MiB document cap; [`Error::Json`] when it is not an array of
/// entries with `Config` and `Layers`; [`Error::InvalidDocument`] when it lists no image;
/// [`Error::InvalidArchivePath`] when an entry names an unsafe path.
pub fn parse_manifest_json(bytes: &[u8]) -> Result<Vec<DockerArchiveEntry>> {
    const WHAT: &str = "docker-archive manifest.json";
    check_document_size(WHAT, bytes.len() as u64)?;
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: WHAT.to_owned(),
            source,
        })?;
    if entries.is_empty() {
        return Err(Error::InvalidDocument {
            what: WHAT.to_owned(),
            reason: "no images listed".to_owned(),
        });
    }
    for entry in &entries {
        entry.validate()?;
    }
    Ok(entries)
}

/// Normalises a member path named inside an archive, refusing anything that could escape the
/// archive's namespace: the result is relative, uses `/`, and has no empty, `.` or `..`
/// components (`./a//b` → `a/b`), so it can be compared with normalised tar member names.
///
/// # Errors
/// [`Error::InvalidArchivePath`] for an empty path, an absolute path, a `..` component, a NUL
/// byte or a backslash (a Windows separator that could hide a `..`), or a path that names the
/// archive root itself.
pub fn archive_path(path: &str) -> Result<String> {
    let refuse = |reason| Error::InvalidArchivePath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(refuse("empty path"));
    }
    if path.starts_with('/') {
        return Err(refuse("absolute path"));
    }
    if path.contains('\0') {
        return Err(refuse("NUL byte in path"));
    }
    if path.contains('\\') {
        return Err(refuse("backslash in path"));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(refuse("'..' component")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(refuse("path names the archive root"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The busybox fixture's manifest.json, as skopeo wrote it.
    const SKOPEO: &str = r#"[{"Config":"950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6.json","RepoTags":["docker.io/anchors/busybox:latest"],"Layers":["e04b8368a29b96c7f3e69eab0b9676a015895e91850348f946579d371186359e.tar"]}]"#;

    #[test]
    fn parses_skopeo_manifest_json() {
        let entries = parse_manifest_json(SKOPEO.as_bytes()).unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.repo_tags, vec!["docker.io/anchors/busybox:latest"]);
        assert_eq!(
            e.config_path().unwrap(),
            "950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6.json"
        );
        assert_eq!(e.layer_paths().unwrap().len(), 1);
        assert_eq!(e.layer_sources, None);
        let names = e.references().unwrap();
        assert_eq!(names[0].to_string(), "docker.io/anchors/busybox:latest");
        // Round trip keeps Docker's field names and omits absent LayerSources.
        let json = serde_json::to_string(&entries).unwrap();
        assert!(json.contains("\"RepoTags\"") && !json.contains("LayerSources"));
        assert_eq!(parse_manifest_json(json.as_bytes()).unwrap(), entries);
    }

    #[test]
    fn parses_docker_save_with_legacy_layers_null_tags_and_sources() {
        let hex: String = std::iter::repeat_n('a', 64).collect();
        let json = format!(
            r#"[{{"Config":"{hex}.json","RepoTags":null,"Layers":["{hex}/layer.tar"],
              "LayerSources":{{"sha256:{hex}":{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
              "size":10,"digest":"sha256:{hex}","urls":["https://example.invalid/l"]}}}}}},
              {{"Config":"blobs/sha256/{hex}","Layers":["./blobs/sha256/{hex}"]}}]"#
        );
        let entries = parse_manifest_json(json.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].repo_tags.is_empty());
        assert_eq!(
            entries[0].layer_paths().unwrap(),
            vec![format!("{hex}/layer.tar")]
        );
        let sources = entries[0].layer_sources.as_ref().unwrap();
        let key: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(sources[&key].size(), 10);
        assert!(entries[1].repo_tags.is_empty());
        assert!(entries[1].references().unwrap().is_empty());
        let bad = DockerArchiveEntry {
            repo_tags: vec!["busybox:latest".to_owned(), "Bad Name".to_owned()],
            ..entries[1].clone()
        };
        assert!(matches!(
            bad.references().unwrap_err(),
            Error::InvalidReference { .. }
        ));
        assert_eq!(
            entries[1].layer_paths().unwrap(),
            vec![format!("blobs/sha256/{hex}")]
        );
    }

    #[test]
    fn refuses_unsafe_paths() {
        for (bad, reason) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x.json", "'..'"),
            ("a/../../x", "'..'"),
            ("a/..", "'..'"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL"),
            (".", "root"),
            ("./", "root"),
        ] {
            let err = archive_path(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            assert!(
                matches!(&err, Error::InvalidArchivePath { path, reason: r } if path == bad && r.contains(reason)),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(archive_path("./a//b/./c").unwrap(), "a/b/c");
        assert_eq!(archive_path("a..b/..c").unwrap(), "a..b/..c");

        for json in [
            r#"[{"Config":"/abs.json","Layers":[]}]"#,
            r#"[{"Config":"c.json","Layers":["ok.tar","../../evil.tar"]}]"#,
        ] {
            let err = parse_manifest_json(json.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::InvalidArchivePath { .. }), "{err}");
        }
    }

    #[test]
    fn refuses_malformed_empty_and_oversized() {
        for bad in [
            &b"{}"[..],
            b"[{\"RepoTags\":[]}]",
            b"[{\"Config\":\"c\"}]",
            b"not json",
            b"[{\"Config\":\"c\",\"Layers\":[],\"LayerSources\":{\"md5:00\":{}}}]",
        ] {
            let err = parse_manifest_json(bad).unwrap_err();
            assert!(matches!(err, Error::Json { .. }), "{err}");
        }
        let err = parse_manifest_json(b"[]").unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let big = vec![b' '; crate::manifest::MAX_DOCUMENT_SIZE as usize + 1];
        let err = parse_manifest_json(&big).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
