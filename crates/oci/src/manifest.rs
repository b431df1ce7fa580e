//! Image documents: manifests, indexes (manifest lists) and configs, decoded safely from bytes.
//!
//! The types are `oci-spec`'s, re-exported here so every berth crate names the same ones. Docker's
//! v2 schema 2 manifest and manifest list have the same JSON shape as the OCI manifest and index,
//! differing only in media types, so one decoder serves both families and reports which
//! [`Format`] and media type it found.
//!
//! Decoding is defensive, in containerd's manner:
//! 1. the document must not exceed [`MAX_DOCUMENT_SIZE`] (4 MiB; callers should also check a
//!    descriptor's declared size with [`check_document_size`] before reading the blob);
//! 2. a small probe reads `schemaVersion`, `mediaType` and which fields are present, so a
//!    manifest is never mistaken for an index or the reverse, and Docker schema 1 is refused by
//!    name;
//! 3. only then is the full document decoded, and in a manifest every descriptor's digest must be
//!    one berth can verify ([`Digest`]).
//!
//! Every error names the document (`what`: a digest or a path given by the caller).

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media_type::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MediaKind, OCI_INDEX, OCI_MANIFEST, kind_of,
};

/// The largest manifest, index or config berth decodes: 4 MiB, containerd's limit.
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// Docker v2 schema 1 manifest media type (refused: it has no config and is deprecated).
pub const DOCKER_SCHEMA1_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker v2 schema 1 signed manifest media type (refused like schema 1).
pub const DOCKER_SCHEMA1_SIGNED_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Which specification a manifest or index follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The OCI image spec (also assumed when the document has no `mediaType`).
    Oci,
    /// Docker image manifest v2 schema 2 / manifest list.
    DockerV2,
}

/// A decoded manifest or index together with what the document said about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// The decoded document.
    pub value: T,
    /// The document's own `mediaType` field, if it had one.
    pub media_type: Option<String>,
    /// The family, from the media type (OCI when absent).
    pub format: Format,
}

impl<T> Parsed<T> {
    /// Checks that the media type a descriptor declared for this document agrees with the
    /// document's own `mediaType` (when it has one), as containerd does, so that a manifest
    /// cannot be passed off as an index or a Docker document as an OCI one.
    ///
    /// # Errors
    /// [`Error::InvalidDocument`] naming `what` and both media types when they differ.
    pub fn check_declared_media_type(&self, what: &str, declared: &str) -> Result<()> {
        match &self.media_type {
            Some(own) if own != declared => Err(invalid(
                what,
                format!(
                    "the descriptor declares media type {declared:?} but the document says {own:?}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The media type to record for the document: its own `mediaType`, or the OCI type for
    /// `kind` when the document omitted it (allowed by the OCI spec).
    fn effective_media_type(&self, oci_default: &'static str) -> String {
        self.media_type
            .clone()
            .unwrap_or_else(|| oci_default.to_owned())
    }
}

impl Parsed<ImageManifest> {
    /// The manifest's media type, defaulting to the OCI manifest type when the document has none.
    pub fn media_type_or_default(&self) -> String {
        self.effective_media_type(OCI_MANIFEST)
    }
}

impl Parsed<ImageIndex> {
    /// The index's media type, defaulting to the OCI index type when the document has none.
    pub fn media_type_or_default(&self) -> String {
        self.effective_media_type(OCI_INDEX)
    }
}

/// A document that may be either a manifest or an index, as found behind an `index.json` entry
/// or a tag whose descriptor lacks a trustworthy media type.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// An image manifest.
    Manifest(Box<Parsed<ImageManifest>>),
    /// An index or manifest list.
    Index(Box<Parsed<ImageIndex>>),
}

impl Document {
    /// The family of the document.
    pub fn format(&self) -> Format {
        match self {
            Document::Manifest(p) => p.format,
            Document::Index(p) => p.format,
        }
    }

    /// The media type to record: the document's own, or the OCI type of its kind.
    pub fn media_type_or_default(&self) -> String {
        match self {
            Document::Manifest(p) => p.media_type_or_default(),
            Document::Index(p) => p.media_type_or_default(),
        }
    }
}

/// The fields read before the full decode.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<IgnoredAny>,
}

/// Refuses a document, or a declared blob size, above [`MAX_DOCUMENT_SIZE`].
///
/// # Errors
/// [`Error::TooLarge`] naming `what`.
pub fn check_document_size(what: &str, size: u64) -> Result<()> {
    if size > MAX_DOCUMENT_SIZE {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            size,
            limit: MAX_DOCUMENT_SIZE,
        });
    }
    Ok(())
}

fn json_error(what: &str, source: serde_json::Error) -> Error {
    Error::Json {
        what: what.to_owned(),
        source,
    }
}

fn invalid(what: &str, reason: impl Into<String>) -> Error {
    Error::InvalidDocument {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

/// Size check, probe, schema version and schema-1 refusal shared by every decoder.
fn probe(bytes: &[u8], what: &str) -> Result<Probe> {
    check_document_size(what, bytes.len() as u64)?;
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| json_error(what, e))?;
    if let Some(mt) = probe.media_type.as_deref()
        && (mt == DOCKER_SCHEMA1_MANIFEST || mt == DOCKER_SCHEMA1_SIGNED_MANIFEST)
    {
        return Err(Error::UnsupportedMediaType {
            media_type: mt.to_owned(),
            context: Some(format!("{what} (Docker schema 1 is not supported)")),
        });
    }
    match probe.schema_version {
        Some(2) => {}
        Some(1) => {
            return Err(invalid(
                what,
                "schemaVersion 1 (Docker schema 1) is not supported",
            ));
        }
        Some(v) => return Err(invalid(what, format!("unsupported schemaVersion {v}"))),
        None => return Err(invalid(what, "missing schemaVersion")),
    }
    if probe.fs_layers.is_some() {
        return Err(invalid(
            what,
            "fsLayers found: Docker schema 1 is not supported",
        ));
    }
    Ok(probe)
}

fn format_of(media_type: Option<&str>) -> Format {
    match media_type {
        Some(DOCKER_MANIFEST | DOCKER_MANIFEST_LIST) => Format::DockerV2,
        _ => Format::Oci,
    }
}

/// Checks every descriptor of a manifest names a digest berth can verify.
fn check_manifest_digests(manifest: &ImageManifest, what: &str) -> Result<()> {
    let config = std::iter::once(("config".to_owned(), manifest.config()));
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("layers[{i}]"), d));
    for (field, descriptor) in config.chain(layers) {
        descriptor_digest(descriptor).map_err(|e| invalid(what, format!("{field}: {e}")))?;
    }
    Ok(())
}

/// Decodes an image manifest (OCI or Docker v2 schema 2) from `bytes`.
///
/// `what` names the document in errors (its digest or path).
///
/// # Errors
/// [`Error::TooLarge`] over [`MAX_DOCUMENT_SIZE`]; [`Error::Json`] for malformed JSON or missing
/// required fields; [`Error::UnsupportedMediaType`] when the `mediaType` is not a manifest type
/// (an index, Docker schema 1, anything else); [`Error::InvalidDocument`] for a schema version
/// other than 2, index fields (`manifests`) in the document, or a descriptor whose digest is
/// not sha256/sha512 in valid lowercase hex.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<Parsed<ImageManifest>> {
    let probe = probe(bytes, what)?;
    if let Some(mt) = probe.media_type.as_deref()
        && kind_of(mt) != MediaKind::Manifest
    {
        return Err(Error::UnsupportedMediaType {
            media_type: mt.to_owned(),
            context: Some(format!("{what} (expected an image manifest)")),
        });
    }
    if probe.manifests.is_some() {
        return Err(invalid(
            what,
            "a manifest must not have a \"manifests\" field (is it an index?)",
        ));
    }
    let value: ImageManifest = serde_json::from_slice(bytes).map_err(|e| json_error(what, e))?;
    check_manifest_digests(&value, what)?;
    Ok(Parsed {
        format: format_of(probe.media_type.as_deref()),
        media_type: probe.media_type,
        value,
    })
}

/// Decodes an image index (OCI) or manifest list (Docker v2 schema 2) from `bytes`.
///
/// Entries are not required to carry sha256/sha512 digests (an index may list artifacts berth
/// never fetches); convert the entry you select with [`descriptor_digest`].
///
/// # Errors
/// As [`parse_manifest`], with the roles swapped: the `mediaType` must be an index type and the
/// document must not have `layers` or `config` fields.
pub fn parse_index(bytes: &[u8], what: &str) -> Result<Parsed<ImageIndex>> {
    let probe = probe(bytes, what)?;
    if let Some(mt) = probe.media_type.as_deref()
        && kind_of(mt) != MediaKind::Index
    {
        return Err(Error::UnsupportedMediaType {
            media_type: mt.to_owned(),
            context: Some(format!("{what} (expected an image index)")),
        });
    }
    if probe.layers.is_some() || probe.config.is_some() {
        return Err(invalid(
            what,
            "an index must not have \"layers\" or \"config\" fields (is it a manifest?)",
        ));
    }
    let value: ImageIndex = serde_json::from_slice(bytes).map_err(|e| json_error(what, e))?;
    Ok(Parsed {
        format: format_of(probe.media_type.as_deref()),
        media_type: probe.media_type,
        value,
    })
}

/// Decodes a document that may be a manifest or an index, deciding by its `mediaType` or,
/// when absent, by its fields (`manifests` → index; `config`/`layers` → manifest).
///
/// # Errors
/// As [`parse_manifest`] and [`parse_index`]; [`Error::InvalidDocument`] when the fields are
/// ambiguous (both or neither kind) and no `mediaType` decides.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    let probe = probe(bytes, what)?;
    let kind = match probe.media_type.as_deref() {
        Some(mt) => match kind_of(mt) {
            MediaKind::Manifest => MediaKind::Manifest,
            MediaKind::Index => MediaKind::Index,
            _ => {
                return Err(Error::UnsupportedMediaType {
                    media_type: mt.to_owned(),
                    context: Some(format!("{what} (expected a manifest or an index)")),
                });
            }
        },
        None => {
            let index_like = probe.manifests.is_some();
            let manifest_like = probe.layers.is_some() || probe.config.is_some();
            match (index_like, manifest_like) {
                (true, false) => MediaKind::Index,
                (false, true) => MediaKind::Manifest,
                _ => {
                    return Err(invalid(
                        what,
                        "cannot tell a manifest from an index: no mediaType and ambiguous fields",
                    ));
                }
            }
        }
    };
    if kind == MediaKind::Index {
        parse_index(bytes, what).map(|p| Document::Index(Box::new(p)))
    } else {
        parse_manifest(bytes, what).map(|p| Document::Manifest(Box::new(p)))
    }
}

/// Decodes an image config (OCI `application/vnd.oci.image.config.v1+json` or Docker's
/// `application/vnd.docker.container.image.v1+json`, which share their fields; Docker-only
/// fields such as `container_config` are ignored).
///
/// # Errors
/// [`Error::TooLarge`] over [`MAX_DOCUMENT_SIZE`]; [`Error::Json`] for malformed JSON or missing
/// required fields (`architecture`, `os`, `rootfs`); [`Error::InvalidDocument`] when
/// `rootfs.type` is not `layers` or a `diff_ids` entry is not a digest berth can verify.
pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfiguration> {
    check_document_size(what, bytes.len() as u64)?;
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| json_error(what, e))?;
    if config.rootfs().typ() != "layers" {
        return Err(invalid(
            what,
            format!(
                "rootfs.type is {:?}, expected \"layers\"",
                config.rootfs().typ()
            ),
        ));
    }
    diff_ids(&config).map_err(|e| invalid(what, e.to_string()))?;
    Ok(config)
}

/// The layer diffIDs of a config as berth digests, bottom layer first.
///
/// # Errors
/// [`Error::InvalidDigest`] for an entry that is not sha256/sha512 in lowercase hex.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| s.parse())
        .collect()
}

/// The digest of a descriptor as a berth [`Digest`].
///
/// # Errors
/// [`Error::InvalidDigest`] when the algorithm is not sha256/sha512 (oci-spec also accepts
/// others, such as sha384) or the hex is invalid.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest> {
    Digest::try_from(descriptor.digest())
}

/// Builds a descriptor for a blob of `media_type`, `digest` and `size`.
///
/// # Errors
/// [`Error::InvalidDigest`] if oci-spec refuses the digest (it accepts every berth digest).
pub fn new_descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor> {
    let digest = oci_spec::image::Digest::try_from(digest)?;
    Ok(Descriptor::new(media_type.into(), size, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_LAYER_GZIP};

    // The busybox fixture's manifest and config, as skopeo wrote them.
    const OCI_MANIFEST_JSON: &str = r#"{"config":{"digest":"sha256:950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6","mediaType":"application/vnd.oci.image.config.v1+json","size":445},"layers":[{"digest":"sha256:c35cc138a9a70f4dfeab8c49e0457a1e070faeba69fc3a02d593dae5b2773981","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1036102}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#;
    const CONFIG_JSON: &str = r#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},"created":"2025-05-20T00:00:00Z","history":[{"created":"2025-05-20T00:00:00Z","created_by":"busybox-static"}],"os":"linux","rootfs":{"diff_ids":["sha256:e04b8368a29b96c7f3e69eab0b9676a015895e91850348f946579d371186359e"],"type":"layers"}}"#;
    const OCI_INDEX_JSON: &str = r#"{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"latest"},"digest":"sha256:fc9ccb2f83219abb8405e0f2fbe32cc78376cf9c53e3fbe483fd1ded71143710","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"amd64","os":"linux"},"size":405}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#;

    fn hex(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","size":1469,"digest":"sha256:{}"}},
            "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","size":2,"digest":"sha256:{}"}},
                      {{"mediaType":"{DOCKER_LAYER_GZIP}","size":3,"digest":"sha256:{}"}}]}}"#,
            hex('a'),
            hex('b'),
            hex('c')
        )
    }

    fn docker_list() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","size":7,"digest":"sha256:{}","platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","size":8,"digest":"sha256:{}","platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            hex('d'),
            hex('e')
        )
    }

    #[test]
    fn parses_oci_manifest() {
        let p = parse_manifest(OCI_MANIFEST_JSON.as_bytes(), "busybox manifest").unwrap();
        assert_eq!(p.format, Format::Oci);
        assert_eq!(p.media_type.as_deref(), Some(OCI_MANIFEST));
        assert_eq!(p.value.layers().len(), 1);
        assert_eq!(p.value.config().media_type().to_string(), OCI_CONFIG);
        assert_eq!(p.value.layers()[0].media_type().to_string(), OCI_LAYER_GZIP);
        assert_eq!(p.value.layers()[0].size(), 1_036_102);
        assert_eq!(
            descriptor_digest(p.value.config()).unwrap().to_string(),
            "sha256:950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6"
        );
    }

    #[test]
    fn parses_skopeo_docker_v2s2_manifest() {
        // `skopeo copy --format v2s2 oci:busybox-oci dir:…` wrote this for the busybox fixture.
        let skopeo = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":445,"digest":"sha256:950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1036102,"digest":"sha256:c35cc138a9a70f4dfeab8c49e0457a1e070faeba69fc3a02d593dae5b2773981"}]}"#;
        let docker = parse_manifest(skopeo.as_bytes(), "v2s2").unwrap();
        let oci = parse_manifest(OCI_MANIFEST_JSON.as_bytes(), "oci").unwrap();
        assert_eq!(docker.format, Format::DockerV2);
        assert_eq!(
            kind_of(docker.value.config().media_type().as_ref()),
            MediaKind::Config
        );
        // Same blobs, different media types.
        assert_eq!(docker.value.config().digest(), oci.value.config().digest());
        assert_eq!(
            docker.value.layers()[0].digest(),
            oci.value.layers()[0].digest()
        );
        assert_eq!(
            kind_of(docker.value.layers()[0].media_type().as_ref()),
            kind_of(oci.value.layers()[0].media_type().as_ref())
        );
        assert!(matches!(
            parse_document(skopeo.as_bytes(), "v2s2").unwrap(),
            Document::Manifest(_)
        ));
    }

    #[test]
    fn checks_declared_media_type() {
        let m = parse_manifest(docker_manifest().as_bytes(), "sha256:m").unwrap();
        m.check_declared_media_type("sha256:m", DOCKER_MANIFEST)
            .unwrap();
        let err = m
            .check_declared_media_type("sha256:m", OCI_MANIFEST)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidDocument { what, reason }
                if what == "sha256:m" && reason.contains(OCI_MANIFEST) && reason.contains(DOCKER_MANIFEST)),
            "{err}"
        );
        // A document without its own media type accepts what the descriptor declares.
        let bare = OCI_MANIFEST_JSON.replace(
            r#","mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion""#,
            r#","schemaVersion""#,
        );
        let p = parse_manifest(bare.as_bytes(), "m").unwrap();
        p.check_declared_media_type("m", DOCKER_MANIFEST).unwrap();
    }

    #[test]
    fn parses_docker_manifest_and_list() {
        let m = parse_manifest(docker_manifest().as_bytes(), "m").unwrap();
        assert_eq!(m.format, Format::DockerV2);
        assert_eq!(m.media_type.as_deref(), Some(DOCKER_MANIFEST));
        assert_eq!(m.media_type_or_default(), DOCKER_MANIFEST);
        assert_eq!(m.value.config().media_type().to_string(), DOCKER_CONFIG);
        assert_eq!(
            m.value
                .layers()
                .iter()
                .map(|l| kind_of(l.media_type().as_ref()))
                .collect::<Vec<_>>(),
            vec![MediaKind::Layer(crate::Compression::Gzip); 2]
        );
        let l = parse_index(docker_list().as_bytes(), "l").unwrap();
        assert_eq!(l.format, Format::DockerV2);
        assert_eq!(l.media_type.as_deref(), Some(DOCKER_MANIFEST_LIST));
        assert_eq!(l.value.manifests().len(), 2);
        let platform = l.value.manifests()[1].platform().clone().unwrap();
        assert_eq!(platform.variant().as_deref(), Some("v7"));
    }

    #[test]
    fn media_type_is_optional_and_defaults_to_oci() {
        let no_type = OCI_MANIFEST_JSON.replace(
            r#","mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion""#,
            r#","schemaVersion""#,
        );
        assert_ne!(no_type, OCI_MANIFEST_JSON);
        let p = parse_manifest(no_type.as_bytes(), "m").unwrap();
        assert_eq!(p.media_type, None);
        assert_eq!(p.format, Format::Oci);
        assert_eq!(p.media_type_or_default(), OCI_MANIFEST);
        // parse_document tells the kind from the fields.
        assert!(matches!(
            parse_document(no_type.as_bytes(), "m").unwrap(),
            Document::Manifest(_)
        ));
        let index_no_type = OCI_INDEX_JSON.replace(
            r#""mediaType":"application/vnd.oci.image.index.v1+json","#,
            "",
        );
        assert_ne!(index_no_type, OCI_INDEX_JSON);
        let d = parse_document(index_no_type.as_bytes(), "i").unwrap();
        assert_eq!(d.media_type_or_default(), OCI_INDEX);
        assert!(matches!(d, Document::Index(_)));
    }

    #[test]
    fn parse_document_follows_media_type() {
        match parse_document(OCI_INDEX_JSON.as_bytes(), "i").unwrap() {
            Document::Index(p) => assert_eq!(p.value.manifests().len(), 1),
            other => panic!("expected an index, got {other:?}"),
        }
        let d = parse_document(docker_manifest().as_bytes(), "m").unwrap();
        assert_eq!(d.format(), Format::DockerV2);
        assert!(matches!(d, Document::Manifest(_)));
        let err = parse_document(br#"{"schemaVersion":2}"#, "empty").unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let err = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.config.v1+json"}"#,
            "cfg",
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
    }

    #[test]
    fn refuses_wrong_kind() {
        // An index decoded as a manifest and the reverse: refused by media type.
        let err = parse_manifest(OCI_INDEX_JSON.as_bytes(), "sha256:idx").unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedMediaType { media_type, context: Some(c) }
                if media_type == OCI_INDEX && c.contains("sha256:idx")),
            "{err}"
        );
        let err = parse_index(OCI_MANIFEST_JSON.as_bytes(), "x").unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
        // Without media types: refused by fields.
        let err = parse_manifest(
            br#"{"schemaVersion":2,"manifests":[],"config":{"mediaType":"a","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#,
            "mixed",
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let err = parse_index(
            br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#,
            "mixed",
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
    }

    #[test]
    fn refuses_schema1_and_bad_versions() {
        let schema1 = format!(
            r#"{{"schemaVersion":1,"mediaType":"{DOCKER_SCHEMA1_SIGNED_MANIFEST}","name":"x","fsLayers":[]}}"#
        );
        let err = parse_manifest(schema1.as_bytes(), "s1").unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
        let err =
            parse_manifest(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, "s1").unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
        let v3 = OCI_MANIFEST_JSON.replace(r#""schemaVersion":2"#, r#""schemaVersion":3"#);
        let err = parse_manifest(v3.as_bytes(), "v3").unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let none = OCI_MANIFEST_JSON.replace(r#","schemaVersion":2"#, "");
        let err = parse_manifest(none.as_bytes(), "none").unwrap_err();
        assert!(err.to_string().contains("missing schemaVersion"), "{err}");
    }

    #[test]
    fn refuses_malformed_and_oversized() {
        for bad in [&b""[..], b"{", b"[]", b"null", b"{\"schemaVersion\":\"2\"}"] {
            let err = parse_manifest(bad, "sha256:bad").unwrap_err();
            assert!(matches!(err, Error::Json { .. }), "{err}");
            assert!(err.to_string().contains("sha256:bad"));
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
        // Missing required fields are JSON errors too.
        let err = parse_manifest(br#"{"schemaVersion":2,"layers":[]}"#, "m").unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");

        let mut big = OCI_MANIFEST_JSON.as_bytes().to_vec();
        big.pop();
        big.extend_from_slice(b",\"annotations\":{\"x\":\"");
        big.resize(MAX_DOCUMENT_SIZE as usize + 1, b'a');
        for result in [
            parse_manifest(&big, "huge").map(|_| ()),
            parse_index(&big, "huge").map(|_| ()),
            parse_document(&big, "huge").map(|_| ()),
            parse_config(&big, "huge").map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::TooLarge { what, size, limit }
                    if what == "huge" && *size == MAX_DOCUMENT_SIZE + 1 && *limit == MAX_DOCUMENT_SIZE),
                "{err}"
            );
        }
        assert!(check_document_size("d", MAX_DOCUMENT_SIZE).is_ok());
        assert!(check_document_size("d", MAX_DOCUMENT_SIZE + 1).is_err());
    }

    #[test]
    fn refuses_unverifiable_layer_digest() {
        let sha384: String = std::iter::repeat_n('1', 96).collect();
        let bad = docker_manifest().replacen(
            &format!("sha256:{}", hex('c')),
            &format!("sha384:{sha384}"),
            1,
        );
        let err = parse_manifest(bad.as_bytes(), "m").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidDocument { reason, .. } if reason.contains("layers[1]")),
            "{err}"
        );
    }

    #[test]
    fn parses_config_and_diff_ids() {
        let config = parse_config(CONFIG_JSON.as_bytes(), "cfg").unwrap();
        assert_eq!(config.architecture().to_string(), "amd64");
        assert_eq!(config.os().to_string(), "linux");
        let ids = diff_ids(&config).unwrap();
        assert_eq!(
            ids,
            vec![
                "sha256:e04b8368a29b96c7f3e69eab0b9676a015895e91850348f946579d371186359e"
                    .parse::<Digest>()
                    .unwrap()
            ]
        );
        // Docker-only fields are ignored.
        let docker = CONFIG_JSON.replace(
            r#""os":"linux""#,
            r#""os":"linux","container_config":{"Hostname":"x"},"docker_version":"24.0""#,
        );
        assert!(parse_config(docker.as_bytes(), "cfg").is_ok());
        let bad_type = CONFIG_JSON.replace(r#""type":"layers""#, r#""type":"tarball""#);
        let err = parse_config(bad_type.as_bytes(), "cfg").unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let bad_id = CONFIG_JSON.replace("sha256:e04b", "sha256:E04b");
        let err = parse_config(bad_id.as_bytes(), "cfg").unwrap_err();
        assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
        let err = parse_config(br#"{"os":"linux"}"#, "cfg").unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");
    }

    #[test]
    fn builds_descriptors() {
        let digest = Digest::sha256(b"layer");
        let d = new_descriptor(OCI_LAYER_GZIP, &digest, 5).unwrap();
        assert_eq!(d.size(), 5);
        assert_eq!(d.media_type().to_string(), OCI_LAYER_GZIP);
        assert_eq!(descriptor_digest(&d).unwrap(), digest);
        let json = serde_json::to_string(&d).unwrap();
        let back: Descriptor = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
