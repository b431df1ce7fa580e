//! Import of OCI image layouts (directories and oci-archives).
//!
//! `index.json` lists the images; each entry is a manifest or a nested index. For every entry
//! the platform choice selects what to bring in:
//! - [`PlatformChoice::All`]: the entry as it is, every child of every index;
//! - [`PlatformChoice::Host`] / [`PlatformChoice::Only`]: from an index, the best matching
//!   manifest, which becomes the image's target (so every blob an image record points to is in
//!   the store); a plain manifest is kept if its platform (from the descriptor, else from its
//!   config) matches.
//!
//! Names come from `io.containerd.image.name`, else from `org.opencontainers.image.ref.name`
//! when that is a full reference (a bare tag such as `latest` names nothing on its own).

use std::collections::BTreeMap;

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Descriptor, Digest};

use super::error::{Error, Result};
use super::plan::{Plan, plan_layer, read_document, read_small_file};
use super::select::{PlatformChoice, descriptor_platform, platform_of_config};
use super::source::Source;

/// `io.containerd.image.name`: the full image name containerd records in an index entry.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// `org.opencontainers.image.ref.name`: the tag (or reference) of an index entry.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How deep nested indexes may go.
const MAX_DEPTH: usize = 4;

/// A top-level image found in `index.json`: the names it carries and the target chosen.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) names: Vec<String>,
    pub(crate) target: Descriptor,
}

fn media_type_of(d: &Descriptor) -> String {
    d.media_type().to_string()
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    Ok(manifest::descriptor_digest(d)?)
}

struct Planner<'a> {
    source: &'a dyn Source,
    choice: &'a PlatformChoice,
    plan: Plan,
}

impl Planner<'_> {
    /// Reads the manifest or index `desc` points to.
    fn read(&self, desc: &Descriptor, referenced_by: &str) -> Result<(Digest, Vec<u8>)> {
        let digest = digest_of(desc)?;
        if !matches!(
            kind_of(&media_type_of(desc)),
            MediaKind::Index | MediaKind::Manifest
        ) {
            return Err(Error::UnsupportedMediaType {
                media_type: media_type_of(desc),
                digest,
            });
        }
        let bytes = read_document(self.source, &digest, desc.size(), referenced_by)?;
        Ok((digest, bytes))
    }

    /// Plans `desc` (a manifest or an index) and returns the descriptor the image should
    /// target, or `None` when nothing in it matches the platform choice.
    fn resolve(
        &mut self,
        desc: &Descriptor,
        referenced_by: &str,
        depth: usize,
    ) -> Result<Option<Descriptor>> {
        let (digest, bytes) = self.read(desc, referenced_by)?;
        let what = digest.to_string();
        let doc = manifest::parse_document(&bytes, &what)?;
        if kind_of(&media_type_of(desc)) != kind_of(&doc.media_type_or_default()) {
            return Err(Error::InvalidImage {
                what,
                reason: format!(
                    "descriptor says {} but the document is {}",
                    media_type_of(desc),
                    doc.media_type_or_default()
                ),
            });
        }
        match doc {
            Document::Manifest(m) => {
                let config = m.value.config();
                let config_digest = digest_of(config)?;
                if kind_of(&media_type_of(config)) != MediaKind::Config {
                    return Err(Error::UnsupportedMediaType {
                        media_type: media_type_of(config),
                        digest: config_digest,
                    });
                }
                let config_bytes =
                    read_document(self.source, &config_digest, config.size(), &what)?;
                let parsed = manifest::parse_config(&config_bytes, &config_digest.to_string())?;
                let platform = match descriptor_platform(desc) {
                    Some(p) => p,
                    None => platform_of_config(&parsed),
                };
                if !self.choice.accepts(&platform) {
                    return Ok(None);
                }
                let diff_ids = manifest::diff_ids(&parsed)?;
                if diff_ids.len() != m.value.layers().len() {
                    return Err(Error::InvalidImage {
                        what,
                        reason: format!(
                            "{} layers but {} diff_ids in config {config_digest}",
                            m.value.layers().len(),
                            diff_ids.len()
                        ),
                    });
                }
                for layer in m.value.layers() {
                    let layer_digest = digest_of(layer)?;
                    if !matches!(kind_of(&media_type_of(layer)), MediaKind::Layer(_)) {
                        return Err(Error::UnsupportedMediaType {
                            media_type: media_type_of(layer),
                            digest: layer_digest,
                        });
                    }
                    plan_layer(
                        &mut self.plan,
                        self.source,
                        &layer_digest,
                        layer.size(),
                        &what,
                    )?;
                }
                self.plan.add_memory(config_digest, config_bytes, "config");
                self.plan.add_memory(digest, bytes, "manifest");
                Ok(Some(desc.clone()))
            }
            Document::Index(index) => {
                if depth >= MAX_DEPTH {
                    return Err(Error::InvalidImage {
                        what,
                        reason: format!("indexes nested deeper than {MAX_DEPTH}"),
                    });
                }
                let children = index.value.manifests();
                if self.choice.is_all() {
                    for child in children {
                        self.resolve(child, &what, depth + 1)?;
                    }
                    self.plan.add_memory(digest, bytes, "index");
                    return Ok(Some(desc.clone()));
                }
                // Best match first: candidates with a platform on the descriptor are ranked by
                // the matcher; children without one are tried in order afterwards.
                let mut ranked: Vec<&Descriptor> = children
                    .iter()
                    .filter(|c| descriptor_platform(c).is_some_and(|p| self.choice.accepts(&p)))
                    .collect();
                self.choice.sort_best_first(&mut ranked);
                let unplatformed = children.iter().filter(|c| descriptor_platform(c).is_none());
                for child in ranked.into_iter().chain(unplatformed) {
                    if let Some(found) = self.resolve(child, &what, depth + 1)? {
                        return Ok(Some(found));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// The names an `index.json` entry carries.
fn entry_names(desc: &Descriptor) -> Result<Vec<String>> {
    let Some(ann) = desc.annotations() else {
        return Ok(Vec::new());
    };
    if let Some(full) = ann.get(ANNOTATION_CONTAINERD_NAME) {
        return Ok(vec![super::select::normalize_reference(full)?]);
    }
    match ann.get(ANNOTATION_REF_NAME) {
        Some(r) if r.contains('/') => Ok(vec![super::select::normalize_reference(r)?]),
        _ => Ok(Vec::new()),
    }
}

/// Plans the import of the OCI layout in `source`.
pub(crate) fn plan_layout(
    source: &dyn Source,
    choice: &PlatformChoice,
) -> Result<(Plan, Vec<Found>)> {
    let layout = read_small_file(source, "oci-layout")?;
    let layout: serde_json::Value = serde_json::from_slice(&layout).map_err(|e| Error::Json {
        what: format!("{}:oci-layout", source.path().display()),
        source: e,
    })?;
    match layout.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => {}
        other => {
            return Err(Error::InvalidImage {
                what: format!("{}:oci-layout", source.path().display()),
                reason: format!("unsupported imageLayoutVersion {other:?}"),
            });
        }
    }
    let what = format!("{}:index.json", source.path().display());
    let index_bytes = read_small_file(source, "index.json")?;
    let index = manifest::parse_index(&index_bytes, &what)?;
    let mut planner = Planner {
        source,
        choice,
        plan: Plan::default(),
    };
    let mut found = Vec::new();
    for entry in index.value.manifests() {
        let names = entry_names(entry)?;
        if let Some(target) = planner.resolve(entry, "index.json", 0)? {
            found.push(Found { names, target });
        }
    }
    if found.is_empty() {
        return Err(Error::NoMatchingPlatform {
            path: source.path().to_path_buf(),
            platform: choice.to_string(),
        });
    }
    Ok((planner.plan, found))
}

/// Whether `source` looks like an OCI layout.
pub(crate) fn is_layout(source: &dyn Source) -> bool {
    source.contains("oci-layout") && source.contains("index.json")
}

/// Annotations for an `index.json` entry naming `name` (full name and tag).
pub(crate) fn name_annotations(name: &str) -> BTreeMap<String, String> {
    let mut ann = BTreeMap::new();
    ann.insert(ANNOTATION_CONTAINERD_NAME.to_owned(), name.to_owned());
    if let Some(tag) = super::select::tag_of(name) {
        ann.insert(ANNOTATION_REF_NAME.to_owned(), tag);
    }
    ann
}
