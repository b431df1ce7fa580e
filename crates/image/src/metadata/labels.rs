//! Per-blob metadata: labels and the created/updated times of labelled or updated blobs.
//!
//! A blob committed without labels has no record; its times come from the blob file's mtime,
//! which the commit sets. A record is written when a blob is committed with labels or updated,
//! and removed when the blob is deleted.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use super::{CONTENT, MetadataDb};
use crate::error::Result;

/// The metadata record of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    /// The blob's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the blob was committed.
    #[serde(with = "super::time_ns")]
    pub created: SystemTime,
    /// When the blob's labels last changed.
    #[serde(with = "super::time_ns")]
    pub updated: SystemTime,
}

impl MetadataDb {
    /// The record of a blob, if it has one.
    ///
    /// # Errors
    /// `Database` or `Json` on a damaged file.
    pub fn content_record(&self, digest: &Digest) -> Result<Option<ContentRecord>> {
        self.get(CONTENT, &digest.to_string())
    }

    /// Every blob record, keyed by digest text.
    ///
    /// # Errors
    /// `Database` or `Json` on a damaged file.
    pub fn content_records(&self) -> Result<BTreeMap<String, ContentRecord>> {
        Ok(self.scan(CONTENT)?.into_iter().collect())
    }

    /// Replaces the record of a blob.
    ///
    /// # Errors
    /// `Database` on a redb failure.
    pub fn put_content_record(&self, digest: &Digest, record: &ContentRecord) -> Result<()> {
        let key = digest.to_string();
        self.update(CONTENT, |t| t.put(&key, record))
    }

    /// Reads, changes and writes a blob's record in one transaction. `f` receives the current
    /// record (if any) and returns the new one, or `None` to remove it.
    ///
    /// # Errors
    /// What `f` returns, or `Database` on a redb failure.
    pub fn modify_content_record(
        &self,
        digest: &Digest,
        f: impl FnOnce(Option<ContentRecord>) -> Result<Option<ContentRecord>>,
    ) -> Result<Option<ContentRecord>> {
        let key = digest.to_string();
        self.update(CONTENT, |t| {
            let cur = t.get::<ContentRecord>(&key)?;
            let new = f(cur)?;
            match &new {
                Some(r) => t.put(&key, r)?,
                None => {
                    t.remove(&key)?;
                }
            }
            Ok(new)
        })
    }

    /// Removes a blob's record (no error if it had none).
    ///
    /// # Errors
    /// `Database` on a redb failure.
    pub fn remove_content_record(&self, digest: &Digest) -> Result<()> {
        let key = digest.to_string();
        self.update(CONTENT, |t| t.remove(&key).map(|_| ()))
    }
}
