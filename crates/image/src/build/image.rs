//! Image configs and manifests from built layers, written into an OCI layout or a store.
//!
//! [`ImageBuilder`] collects the layers (each a [`LayerInfo`] from a [`LayerBuilder`]) and
//! the runtime defaults (Cmd, Entrypoint, Env, WorkingDir, User, labels), and
//! [`ImageBuilder::finish`] serialises an OCI `ImageConfiguration` (with `rootfs.diff_ids` and
//! one history entry per layer) and an OCI manifest. The documents are serialised once and
//! their bytes are what gets hashed and stored. The result goes into an OCI layout
//! ([`BuiltImage::write_to_layout`]) or a content store with an image record
//! ([`BuiltImage::write_to_store`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_oci::media_type::{OCI_CONFIG, OCI_MANIFEST};
use berth_oci::{Digest, Platform};
use oci_spec::image::{
    ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    RootFsBuilder, SCHEMA_VERSION,
};

use super::layer::{LayerBuilder, LayerInfo};
use crate::content::{ContentStore, Expected};
use crate::export::LayoutWriter;
use crate::import::error::{Error, Result};
use crate::metadata::{Descriptor, Image, LeaseResource};

/// Builds an image config and manifest. Configure with the builder methods.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    platform: Platform,
    created: String,
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: HashMap<String, String>,
    layers: Vec<(LayerInfo, String)>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

fn spec_err(what: &str, e: oci_spec::OciSpecError) -> Error {
    Error::InvalidImage {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

impl ImageBuilder {
    /// An empty image for the host's platform, created at the epoch (reproducible).
    pub fn new() -> Self {
        ImageBuilder {
            platform: Platform::host(),
            created: "1970-01-01T00:00:00Z".to_owned(),
            cmd: Vec::new(),
            entrypoint: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: HashMap::new(),
            layers: Vec::new(),
        }
    }

    /// Sets the platform recorded in the config (default: the host's).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Sets the `created` time (RFC 3339) of the config and its history.
    pub fn created(mut self, rfc3339: impl Into<String>) -> Self {
        self.created = rfc3339.into();
        self
    }

    /// Sets the default command.
    pub fn cmd<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> Self {
        self.cmd = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint<S: Into<String>>(mut self, ep: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = ep.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable `KEY=value`.
    pub fn env(mut self, var: impl Into<String>) -> Self {
        self.env.push(var.into());
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the user (`uid[:gid]` or a name).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a config label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Appends a layer (bottom first), recording `created_by` in the history.
    pub fn layer(mut self, layer: LayerInfo, created_by: impl Into<String>) -> Self {
        self.layers.push((layer, created_by.into()));
        self
    }

    /// Serialises the config and the manifest.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] if oci-spec refuses a value (an empty platform field).
    pub fn finish(&self) -> Result<BuiltImage> {
        let mut run = ConfigBuilder::default();
        if !self.cmd.is_empty() {
            run = run.cmd(self.cmd.clone());
        }
        if !self.entrypoint.is_empty() {
            run = run.entrypoint(self.entrypoint.clone());
        }
        if !self.env.is_empty() {
            run = run.env(self.env.clone());
        }
        if let Some(w) = &self.working_dir {
            run = run.working_dir(w.clone());
        }
        if let Some(u) = &self.user {
            run = run.user(u.clone());
        }
        if !self.labels.is_empty() {
            run = run.labels(self.labels.clone());
        }
        let run = run.build().map_err(|e| spec_err("config", e))?;
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(
                self.layers
                    .iter()
                    .map(|(l, _)| l.diff_id.to_string())
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(|e| spec_err("rootfs", e))?;
        let history = self
            .layers
            .iter()
            .map(|(_, by)| {
                HistoryBuilder::default()
                    .created(self.created.clone())
                    .created_by(by.clone())
                    .build()
                    .map_err(|e| spec_err("history", e))
            })
            .collect::<Result<Vec<_>>>()?;
        let spec_platform = self.platform.to_oci()?;
        let mut config = ImageConfigurationBuilder::default()
            .created(self.created.clone())
            .architecture(spec_platform.architecture().clone())
            .os(spec_platform.os().clone())
            .config(run)
            .rootfs(rootfs)
            .history(history)
            .build()
            .map_err(|e| spec_err("image config", e))?;
        if let Some(v) = &self.platform.variant {
            config.set_variant(Some(v.clone()));
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Json {
            what: "image config".into(),
            source: e,
        })?;
        let config_digest = Digest::sha256(&config_bytes);
        let config_desc = berth_oci::manifest::new_descriptor(
            OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        )?;
        let layers = self
            .layers
            .iter()
            .map(|(l, _)| berth_oci::manifest::new_descriptor(l.media_type, &l.digest, l.size))
            .collect::<berth_oci::Result<Vec<_>>>()?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(layers)
            .build()
            .map_err(|e| spec_err("manifest", e))?;
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Json {
            what: "manifest".into(),
            source: e,
        })?;
        let mut descriptor = Descriptor::new(
            OCI_MANIFEST,
            Digest::sha256(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        descriptor.platform = Some(spec_platform);
        Ok(BuiltImage {
            config: config_bytes,
            config_digest,
            manifest: manifest_bytes,
            descriptor,
        })
    }
}

/// A finished image: its serialised config and manifest.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The config's digest.
    pub config_digest: Digest,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The manifest's descriptor (with the platform), the image's target.
    pub descriptor: Descriptor,
}

impl BuiltImage {
    /// Writes the config and manifest into `layout` and lists the image there as `name`
    /// (a reference, normalised). The layers must have been written there already
    /// ([`write_layer_to_layout`]). Call [`LayoutWriter::finish`] afterwards.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Oci`] for a bad name.
    pub fn write_to_layout(&self, layout: &mut LayoutWriter, name: &str) -> Result<()> {
        let name = crate::import::normalize_reference(name)?;
        layout.put_bytes(&self.config)?;
        layout.put_bytes(&self.manifest)?;
        layout.add_image(&name, &self.descriptor);
        Ok(())
    }

    /// Stores the config and manifest in `store` and records the image `name` (normalised)
    /// pointing at the manifest. The layers must be in the store already
    /// ([`write_layer_to_store`]).
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Oci`] for a bad name.
    pub fn write_to_store(&self, store: &ContentStore, name: &str) -> Result<Image> {
        let name = crate::import::normalize_reference(name)?;
        let none = BTreeMap::new();
        for (bytes, digest) in [
            (&self.config, &self.config_digest),
            (&self.manifest, &self.descriptor.digest),
        ] {
            store.ingest(
                &format!("build-{digest}"),
                &bytes[..],
                digest,
                Some(bytes.len() as u64),
                &none,
                &mut |_, _| {},
            )?;
        }
        Ok(store
            .images()
            .put(Image::new(name, self.descriptor.clone()))?)
    }
}

/// Writes a layer of the tree under `dir` into `layout`.
///
/// # Errors
/// As [`LayerBuilder::write`]; [`Error::Io`] writing the blob.
pub fn write_layer_to_layout(
    layout: &mut LayoutWriter,
    builder: &LayerBuilder,
    dir: &Path,
) -> Result<LayerInfo> {
    let (_, _, info) = layout.put_with(|w| builder.write(dir, w))?;
    Ok(info)
}

/// Writes a layer of the tree under `dir` into `store`. With `lease` (an existing lease id,
/// see [`ContentStore::leases`]) the blob is added to that lease before it is committed, so a
/// concurrent garbage collection keeps it until an image record references it; without one,
/// a collection may take it in the meantime.
///
/// # Errors
/// As [`LayerBuilder::write`]; [`Error::Store`].
pub fn write_layer_to_store(
    store: &ContentStore,
    builder: &LayerBuilder,
    dir: &Path,
    lease: Option<&str>,
) -> Result<LayerInfo> {
    let r#ref = format!(
        "build-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
    );
    let mut writer = store.writer(&r#ref, Some(&Expected::default()))?;
    let info = match builder.write(dir, &mut writer) {
        Ok(info) => info,
        Err(e) => {
            drop(writer);
            let _ = store.abort(&r#ref);
            return Err(e);
        }
    };
    if let Some(id) = lease {
        store
            .leases()
            .add_resource(id, LeaseResource::Content(info.digest.clone()))?;
    }
    match writer.commit(info.size, Some(&info.digest), &BTreeMap::new()) {
        Ok(_) | Err(crate::Error::BlobExists { .. }) => Ok(info),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Compression;

    #[test]
    fn builds_a_valid_config_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello"), b"hi").unwrap();
        let mut out = Vec::new();
        let layer = LayerBuilder::new(Compression::Gzip)
            .write(dir.path(), &mut out)
            .unwrap();
        let built = ImageBuilder::new()
            .cmd(["sh"])
            .env("PATH=/bin")
            .working_dir("/")
            .layer(layer.clone(), "test")
            .finish()
            .unwrap();
        let config = berth_oci::manifest::parse_config(&built.config, "config").unwrap();
        assert_eq!(
            berth_oci::manifest::diff_ids(&config).unwrap(),
            vec![layer.diff_id.clone()]
        );
        assert_eq!(Platform::from_config(&config), Platform::host());
        let run = config.config().as_ref().unwrap();
        assert_eq!(run.cmd().as_deref(), Some(&["sh".to_owned()][..]));
        let m = berth_oci::manifest::parse_manifest(&built.manifest, "m").unwrap();
        assert_eq!(m.value.layers().len(), 1);
        assert_eq!(m.value.layers()[0].size(), layer.size);
        assert_eq!(built.descriptor.digest, Digest::sha256(&built.manifest));
        assert_eq!(built.config_digest, Digest::sha256(&built.config));
    }
}
