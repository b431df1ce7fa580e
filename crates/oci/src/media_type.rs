//! Media types of the OCI image spec and Docker's v2 schema 2, and what each one is.
//!
//! `oci-spec` models Docker media types only as `MediaType::Other`; berth classifies both families
//! with [`MediaKind`] so import, unpack and GC treat them alike.

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed (deprecated but still seen).
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker manifest list (v2 schema 2).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (v2 schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign layer, gzip.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker layer, uncompressed (seen in docker-archive imports).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Compression of a layer blob, as declared by its media type or found by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames, including skippable ones).
    Zstd,
}

/// What a media type denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An index or manifest list.
    Index,
    /// An image manifest.
    Manifest,
    /// An image config.
    Config,
    /// A filesystem layer with its compression.
    Layer(Compression),
    /// Anything else (artifacts, attestations): stored and referenced, never unpacked.
    Other,
}

/// Classifies a media type of either family.
pub fn kind_of(media_type: &str) -> MediaKind {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => MediaKind::Index,
        OCI_MANIFEST | DOCKER_MANIFEST => MediaKind::Manifest,
        OCI_CONFIG | DOCKER_CONFIG => MediaKind::Config,
        OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => {
            MediaKind::Layer(Compression::None)
        }
        OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => {
            MediaKind::Layer(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => MediaKind::Layer(Compression::Zstd),
        _ => MediaKind::Other,
    }
}

/// The OCI layer media type for a compression.
pub fn oci_layer(compression: Compression) -> &'static str {
    match compression {
        Compression::None => OCI_LAYER_TAR,
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_both_families() {
        assert_eq!(kind_of(OCI_INDEX), MediaKind::Index);
        assert_eq!(kind_of(DOCKER_MANIFEST_LIST), MediaKind::Index);
        assert_eq!(kind_of(DOCKER_MANIFEST), MediaKind::Manifest);
        assert_eq!(kind_of(DOCKER_CONFIG), MediaKind::Config);
        assert_eq!(
            kind_of(DOCKER_LAYER_GZIP),
            MediaKind::Layer(Compression::Gzip)
        );
        assert_eq!(kind_of(OCI_LAYER_ZSTD), MediaKind::Layer(Compression::Zstd));
        assert_eq!(kind_of("application/json"), MediaKind::Other);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(kind_of(oci_layer(c)), MediaKind::Layer(c));
        }
    }
}
