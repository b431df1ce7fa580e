//! Image records: a normalised reference name mapped to a target descriptor (an index or a
//! manifest), with labels and times, kept in the store's metadata file.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use super::{IMAGES, MetadataDb};
use crate::content::filter::{Filter, label_field};
use crate::error::{Error, Result};

/// A content descriptor: what a blob is, its digest and size, and for manifests in an index the
/// platform it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type (see `berth_oci::media_type`).
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The platform, for manifests listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<oci_spec::image::Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor without platform or annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

impl TryFrom<&oci_spec::image::Descriptor> for Descriptor {
    type Error = Error;

    fn try_from(d: &oci_spec::image::Descriptor) -> Result<Self> {
        Ok(Descriptor {
            media_type: d.media_type().to_string(),
            digest: Digest::try_from(d.digest())?,
            size: d.size(),
            platform: d.platform().clone(),
            annotations: d
                .annotations()
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }
}

/// An image record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The full normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The root of the image: an index or a manifest.
    pub target: Descriptor,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the record was created (set by the store).
    #[serde(with = "super::time_ns")]
    pub created: SystemTime,
    /// When the record last changed (set by the store).
    #[serde(with = "super::time_ns")]
    pub updated: SystemTime,
}

impl Image {
    /// A record for `name` → `target`, times to be set by the store.
    pub fn new(name: impl Into<String>, target: Descriptor) -> Self {
        Image {
            name: name.into(),
            target,
            labels: BTreeMap::new(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
        }
    }
}

/// The image records of a store. Cheap to clone; every operation is one transaction.
#[derive(Debug, Clone)]
pub struct ImageStore {
    db: MetadataDb,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("image name", "must not be empty"));
    }
    Ok(())
}

impl ImageStore {
    /// The image records in `db`.
    pub fn new(db: MetadataDb) -> Self {
        ImageStore { db }
    }

    /// Records a new image; `created` and `updated` are set to now.
    ///
    /// # Errors
    /// `AlreadyExists` ([`Error::ImageExists`]); `InvalidArgument` for an empty name;
    /// `Database`.
    pub fn create(&self, image: Image) -> Result<Image> {
        check_name(&image.name)?;
        self.db.update(IMAGES, |t| {
            if t.get::<Image>(&image.name)?.is_some() {
                return Err(Error::ImageExists {
                    name: image.name.clone(),
                });
            }
            let now = SystemTime::now();
            let img = Image {
                created: now,
                updated: now,
                ..image
            };
            t.put(&img.name, &img)?;
            Ok(img)
        })
    }

    /// Creates or replaces the record of `image.name` (keeping the original creation time).
    ///
    /// # Errors
    /// `InvalidArgument` for an empty name; `Database`.
    pub fn put(&self, image: Image) -> Result<Image> {
        check_name(&image.name)?;
        self.db.update(IMAGES, |t| {
            let now = SystemTime::now();
            let created = t
                .get::<Image>(&image.name)?
                .map(|old| old.created)
                .unwrap_or(now);
            let img = Image {
                created,
                updated: now,
                ..image
            };
            t.put(&img.name, &img)?;
            Ok(img)
        })
    }

    /// Replaces the target and labels of an existing record.
    ///
    /// # Errors
    /// `NotFound` ([`Error::ImageNotFound`]); `Database`.
    pub fn update(&self, image: Image) -> Result<Image> {
        self.db.update(IMAGES, |t| {
            let Some(old) = t.get::<Image>(&image.name)? else {
                return Err(Error::ImageNotFound {
                    name: image.name.clone(),
                });
            };
            let img = Image {
                created: old.created,
                updated: SystemTime::now(),
                ..image
            };
            t.put(&img.name, &img)?;
            Ok(img)
        })
    }

    /// The record named `name`.
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn get(&self, name: &str) -> Result<Image> {
        self.db
            .get(IMAGES, name)?
            .ok_or_else(|| Error::ImageNotFound {
                name: name.to_owned(),
            })
    }

    /// The records matching `filters` (containerd syntax over `name`, `target.digest`,
    /// `target.mediatype` and `labels.<key>`), sorted by name.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter; `Database`.
    pub fn list(&self, filters: &[&str]) -> Result<Vec<Image>> {
        let filter = Filter::parse(filters)?;
        let all: Vec<(String, Image)> = self.db.scan(IMAGES)?;
        Ok(all
            .into_iter()
            .map(|(_, img)| img)
            .filter(|img| {
                filter.matches(&|p: &[String]| {
                    let p: Vec<&str> = p.iter().map(String::as_str).collect();
                    match p.as_slice() {
                        ["name"] => Some(img.name.clone()),
                        ["target", "digest"] => Some(img.target.digest.to_string()),
                        ["target", "mediatype"] | ["target", "mediaType"] => {
                            Some(img.target.media_type.clone())
                        }
                        _ => None,
                    }
                    .or_else(|| {
                        let owned: Vec<String> = p.iter().map(|s| (*s).to_owned()).collect();
                        label_field(&img.labels, &owned)
                    })
                })
            })
            .collect())
    }

    /// Removes the record named `name` (the content stays until a GC).
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.db.update(IMAGES, |t| {
            if t.remove(name)? {
                Ok(())
            } else {
                Err(Error::ImageNotFound {
                    name: name.to_owned(),
                })
            }
        })
    }
}
