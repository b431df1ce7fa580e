//! Leases: named, optionally expiring GC roots that protect content (and ingests) while a
//! multi-step operation such as an import is in progress.
//!
//! The protocol for an importer: create a lease, add each blob's digest to it **before**
//! committing the blob, record the image, then delete the lease. A GC running at any moment in
//! between keeps everything the lease names (see [`crate::content::gc`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use berth_oci::Digest;
use serde::{Deserialize, Serialize};

use super::{LEASES, MetadataDb};
use crate::error::{Error, Result};

/// Something a lease holds on to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "id")]
pub enum LeaseResource {
    /// A blob (which need not exist yet).
    Content(Digest),
    /// An ingest in progress, by ref.
    Ingest(String),
}

/// A lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease id.
    pub id: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the lease was created.
    #[serde(with = "super::time_ns")]
    pub created: SystemTime,
    /// When the lease stops protecting anything (GC deletes expired leases).
    #[serde(default, with = "super::time_ns::option")]
    pub expires: Option<SystemTime>,
    /// What the lease holds.
    #[serde(default)]
    pub resources: BTreeSet<LeaseResource>,
}

impl Lease {
    /// Whether the lease has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// The leases of a store. Cheap to clone; every operation is one transaction.
#[derive(Debug, Clone)]
pub struct LeaseManager {
    db: MetadataDb,
}

impl LeaseManager {
    /// The leases in `db`.
    pub fn new(db: MetadataDb) -> Self {
        LeaseManager { db }
    }

    /// Creates a lease. An empty `id` gets a random one.
    ///
    /// # Errors
    /// `AlreadyExists` ([`Error::LeaseExists`]); `Database`.
    pub fn create(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
        expires: Option<SystemTime>,
    ) -> Result<Lease> {
        self.create_with_resources(id, labels, expires, &[])
    }

    /// Creates a lease already holding `resources`, in one transaction (one commit instead of
    /// one per resource). An empty `id` gets a random one. Resources the lease holds from
    /// its creation are protected before any of them is stored.
    ///
    /// # Errors
    /// `AlreadyExists` ([`Error::LeaseExists`]); `Database`.
    pub fn create_with_resources(
        &self,
        id: &str,
        labels: BTreeMap<String, String>,
        expires: Option<SystemTime>,
        resources: &[LeaseResource],
    ) -> Result<Lease> {
        let id = if id.is_empty() {
            format!("lease-{:016x}", rand::random::<u64>())
        } else {
            id.to_owned()
        };
        self.db.update(LEASES, |t| {
            if t.get::<Lease>(&id)?.is_some() {
                return Err(Error::LeaseExists { id: id.clone() });
            }
            let lease = Lease {
                id: id.clone(),
                labels,
                created: SystemTime::now(),
                expires,
                resources: resources.iter().cloned().collect(),
            };
            t.put(&id, &lease)?;
            Ok(lease)
        })
    }

    /// The lease `id`.
    ///
    /// # Errors
    /// `NotFound` ([`Error::LeaseNotFound`]); `Database`.
    pub fn get(&self, id: &str) -> Result<Lease> {
        self.db
            .get(LEASES, id)?
            .ok_or_else(|| Error::LeaseNotFound { id: id.to_owned() })
    }

    /// Adds a resource to the lease (idempotent).
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn add_resource(&self, id: &str, resource: LeaseResource) -> Result<()> {
        // A read transaction is cheap; a write costs an fsync. Skip it when nothing changes.
        if self.get(id)?.resources.contains(&resource) {
            return Ok(());
        }
        self.modify(id, |l| {
            l.resources.insert(resource);
        })
    }

    /// Adds several resources to the lease in one transaction (idempotent). Nothing is
    /// written when the lease holds them all already.
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn add_resources(&self, id: &str, resources: &[LeaseResource]) -> Result<()> {
        let held = self.get(id)?.resources;
        if resources.iter().all(|r| held.contains(r)) {
            return Ok(());
        }
        self.modify(id, |l| {
            l.resources.extend(resources.iter().cloned());
        })
    }

    /// Removes a resource from the lease (no error if it was not there).
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn delete_resource(&self, id: &str, resource: &LeaseResource) -> Result<()> {
        self.modify(id, |l| {
            l.resources.remove(resource);
        })
    }

    fn modify(&self, id: &str, f: impl FnOnce(&mut Lease)) -> Result<()> {
        self.db.update(LEASES, |t| {
            let Some(mut lease) = t.get::<Lease>(id)? else {
                return Err(Error::LeaseNotFound { id: id.to_owned() });
            };
            f(&mut lease);
            t.put(id, &lease)
        })
    }

    /// Deletes the lease (what it held becomes collectable unless reachable otherwise).
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.db.update(LEASES, |t| {
            if t.remove(id)? {
                Ok(())
            } else {
                Err(Error::LeaseNotFound { id: id.to_owned() })
            }
        })
    }

    /// Every lease, sorted by id.
    ///
    /// # Errors
    /// `Database`.
    pub fn list(&self) -> Result<Vec<Lease>> {
        Ok(self
            .db
            .scan::<Lease>(LEASES)?
            .into_iter()
            .map(|(_, l)| l)
            .collect())
    }
}
