//! Import of docker-archives (`docker save`, `skopeo copy … docker-archive:`).
//!
//! `manifest.json` lists images as a config file, layer tars and `RepoTags`. There is no
//! registry manifest in the archive, so one is built: a Docker v2 schema 2 manifest (an OCI
//! one when a layer is zstd) whose layer descriptors carry the digests computed while the
//! layers stream into the store and the compression found by their first bytes. Uncompressed
//! layers must hash to the config's diffIDs. Layer paths named by their digest (`<hex>.tar`,
//! `blobs/sha256/<hex>`) are verified against that name, which also lets a rerun skip them;
//! legacy `<id>/layer.tar` files (often links to a `<hex>.tar`) are hashed as they stream.

use berth_oci::docker_archive::parse_manifest_json;
use berth_oci::manifest::{self, Descriptor};
use berth_oci::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, OCI_CONFIG,
    OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use berth_oci::{Algorithm, Compression, Digest};

use super::error::{Error, Result};
use super::ingest::Stored;
use super::oci::Found;
use super::plan::{Plan, StreamBlob, read_small_file};
use super::select::{PlatformChoice, platform_of_config, to_spec_platform};
use super::source::Source;

/// One image of the archive, planned.
#[derive(Debug)]
pub(crate) struct PlannedImage {
    names: Vec<String>,
    config_digest: Digest,
    config_size: u64,
    config: berth_oci::ImageConfiguration,
    layers: Vec<usize>,
}

/// A digest named by a layer path, if the path is `<hex>.tar` or `blobs/sha256/<hex>`.
fn digest_from_path(path: &str) -> Option<Digest> {
    let hex = path
        .strip_suffix(".tar")
        .filter(|h| !h.contains('/'))
        .or_else(|| path.strip_prefix("blobs/sha256/"))?;
    Digest::new(Algorithm::Sha256, hex).ok()
}

/// Plans the import of the docker-archive in `source`.
pub(crate) fn plan_archive(
    source: &dyn Source,
    choice: &PlatformChoice,
) -> Result<(Plan, Vec<PlannedImage>)> {
    let entries = parse_manifest_json(&read_small_file(source, "manifest.json")?)?;
    let mut plan = Plan::default();
    let mut images = Vec::new();
    for entry in &entries {
        let config_path = entry.config_path()?;
        let bytes = read_small_file(source, &config_path)?;
        let config_digest = Digest::sha256(&bytes);
        if let Some(named) = digest_from_path(&config_path.replace(".json", ".tar"))
            && named != config_digest
        {
            return Err(Error::BlobMismatch {
                digest: named.clone(),
                name: config_path,
                source: berth_oci::Error::DigestMismatch {
                    expected: named.to_string(),
                    actual: config_digest.to_string(),
                },
            });
        }
        let config = manifest::parse_config(&bytes, &config_path)?;
        if !choice.accepts(&platform_of_config(&config)) {
            continue;
        }
        let layer_paths = entry.layer_paths()?;
        let diff_ids = manifest::diff_ids(&config)?;
        if diff_ids.len() != layer_paths.len() {
            return Err(Error::InvalidImage {
                what: config_path,
                reason: format!(
                    "{} layers listed but {} diff_ids in the config",
                    layer_paths.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for path in layer_paths {
            let (_, size) = source.open(&path)?.ok_or_else(|| Error::MissingFile {
                path: source.path().to_path_buf(),
                name: path.clone(),
            })?;
            layers.push(plan.add_stream(StreamBlob {
                digest: digest_from_path(&path),
                name: path,
                size,
                kind: "layer",
            }));
        }
        let names = entry
            .repo_tags
            .iter()
            .map(|t| super::select::normalize_reference(t))
            .collect::<Result<Vec<_>>>()?;
        images.push(PlannedImage {
            names,
            config_digest: config_digest.clone(),
            config_size: bytes.len() as u64,
            config,
            layers,
        });
        plan.add_memory(config_digest, bytes, "config");
    }
    if images.is_empty() {
        return Err(Error::NoMatchingPlatform {
            path: source.path().to_path_buf(),
            platform: choice.to_string(),
        });
    }
    Ok((plan, images))
}

/// Serialised documents to store, with their digests.
pub(crate) type Documents = Vec<(Digest, Vec<u8>)>;

/// Builds the manifest of each planned image from the stored layers; returns the manifests'
/// bytes (to store) and the images found.
pub(crate) fn build_manifests(
    images: &[PlannedImage],
    stored: &[Stored],
) -> Result<(Documents, Vec<Found>)> {
    let mut docs = Vec::new();
    let mut found = Vec::new();
    for image in images {
        let diff_ids = manifest::diff_ids(&image.config)?;
        let layers: Vec<&Stored> = image.layers.iter().map(|&i| &stored[i]).collect();
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            if layer.compression == Compression::None && &layer.digest != diff_id {
                return Err(Error::InvalidImage {
                    what: format!("layer {}", layer.digest),
                    reason: format!("uncompressed layer does not match diffID {diff_id}"),
                });
            }
        }
        let oci = layers.iter().any(|l| l.compression == Compression::Zstd);
        let (manifest_type, config_type) = if oci {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        let layer_json: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let media_type = match l.compression {
                    Compression::None => DOCKER_LAYER_TAR,
                    Compression::Gzip => DOCKER_LAYER_GZIP,
                    Compression::Zstd => OCI_LAYER_ZSTD,
                };
                serde_json::json!({
                    "mediaType": media_type,
                    "size": l.size,
                    "digest": l.digest.to_string(),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_type,
                "size": image.config_size,
                "digest": image.config_digest.to_string(),
            },
            "layers": layer_json,
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| Error::Json {
            what: format!("manifest for config {}", image.config_digest),
            source: e,
        })?;
        let digest = Digest::sha256(&bytes);
        let mut target: Descriptor =
            manifest::new_descriptor(manifest_type, &digest, bytes.len() as u64)?;
        target.set_platform(Some(to_spec_platform(&platform_of_config(&image.config))?));
        docs.push((digest, bytes));
        found.push(Found {
            names: image.names.clone(),
            target,
        });
    }
    Ok((docs, found))
}

/// Whether `source` looks like a docker-archive.
pub(crate) fn is_docker_archive(source: &dyn Source) -> bool {
    source.contains("manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_layer_paths() {
        let hex = "e04b8368a29b96c7f3e69eab0b9676a015895e91850348f946579d371186359e";
        assert_eq!(
            digest_from_path(&format!("{hex}.tar")).map(|d| d.hex().to_owned()),
            Some(hex.to_owned())
        );
        assert!(digest_from_path(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_from_path(&format!("{hex}/layer.tar")).is_none());
        assert!(digest_from_path("abc.tar").is_none());
    }
}
