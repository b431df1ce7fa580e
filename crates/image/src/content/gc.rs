//! Garbage collection of the content store: mark from the roots, sweep the rest.
//!
//! **Roots**: the target of every image record; every resource of every lease that has not
//! expired; every blob labelled `containerd.io/gc.root`. **Edges**: from an index to its
//! manifests, from a manifest to its config, layers and subject (JSON parsed with the
//! [`MAX_DOCUMENT_SIZE`] cap; a blob reached without a media type —
//! from a lease or a label — is parsed if it looks like such a document), and from any blob to
//! the digests in its `containerd.io/gc.ref.content[.*]` labels.
//!
//! **Sweep**: blobs not marked are deleted; ingests no writer holds, no live lease names and
//! not written to for [`GcOptions::ingest_max_age`] are removed; expired leases are deleted.
//!
//! # Concurrency
//! A collection holds an exclusive `flock` on `<root>/gc.lock` from listing to sweeping. Every
//! commit holds it shared from the moment it records its blob in its handle's lease (see
//! [`ContentStore::leased`]) until the blob is renamed into place and its labels are written, and
//! a leased handle holds it shared while it finds a blob already present and records it. So a
//! collection sees either the blob together with its lease or `gc.root` label, or neither; and a
//! writer never reports "already exists" for a blob a running collection is about to sweep.
//! Writers that add blobs to a lease themselves must do so before committing (as import does).
//! The blob list is also taken before the metadata is read, and metadata is read in one
//! transaction.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, SystemTime};

use berth_oci::Digest;
use berth_oci::media_type::{self, MediaKind};

use super::ingest;
use super::{ContentStore, LABEL_GC_REF_CONTENT, LABEL_GC_ROOT, MAX_DOCUMENT_SIZE};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::LeaseResource;

/// Options of a collection.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Ingests not written to for this long (and not held or leased) are removed.
    pub ingest_max_age: Duration,
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            ingest_max_age: Duration::from_secs(24 * 60 * 60),
            dry_run: false,
        }
    }
}

/// What a collection removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Their total size.
    pub removed_bytes: u64,
    /// Refs of the stale ingests removed (the directory name when the ref was unreadable).
    pub removed_ingests: Vec<String>,
    /// Ids of the expired leases deleted.
    pub expired_leases: Vec<String>,
    /// Blobs kept because something reaches them.
    pub kept_blobs: usize,
}

impl ContentStore {
    /// Runs a collection (see the [module docs](self::super::gc)).
    ///
    /// # Errors
    /// `Io`/`Database` on failures; a blob that cannot be parsed is kept, not an error.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let lock = lock_gc(self.root(), true)?;
        let res = self.collect(opts);
        drop::<File>(lock);
        res
    }

    /// Holds off a collection for as long as the returned file is open: taken around the
    /// moments a blob becomes visible or is found present for a lease (see the module docs).
    pub(crate) fn gc_fence(&self) -> Result<File> {
        lock_gc(self.root(), false)
    }

    fn collect(&self, opts: &GcOptions) -> Result<GcReport> {
        let now = SystemTime::now();
        // Listing first: whatever is committed after this point is out of this sweep's reach.
        let blobs = self.list_digests()?;
        let ingest_dirs = ingest::list_dirs(&self.ingest_root())?;
        let snap = self.db().snapshot()?;

        let mut report = GcReport::default();
        let mut work: Vec<(Digest, Option<String>)> = Vec::new();
        let mut leased_ingests = HashSet::new();
        for lease in &snap.leases {
            if lease.is_expired(now) {
                report.expired_leases.push(lease.id.clone());
                continue;
            }
            for r in &lease.resources {
                match r {
                    LeaseResource::Content(d) => work.push((d.clone(), None)),
                    LeaseResource::Ingest(r) => {
                        leased_ingests.insert(r.clone());
                    }
                }
            }
        }
        for img in &snap.images {
            work.push((
                img.target.digest.clone(),
                Some(img.target.media_type.clone()),
            ));
        }
        for (d, rec) in &snap.content {
            if rec.labels.contains_key(LABEL_GC_ROOT)
                && let Ok(d) = d.parse::<Digest>()
            {
                work.push((d, None));
            }
        }

        let mut marked: HashSet<Digest> = HashSet::new();
        while let Some((d, media)) = work.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            if let Some(rec) = snap.content.get(&d.to_string()) {
                for (k, v) in &rec.labels {
                    if is_gc_ref_content(k)
                        && let Ok(child) = v.parse::<Digest>()
                    {
                        work.push((child, None));
                    }
                }
            }
            for child in self.children(&d, media.as_deref()) {
                work.push(child);
            }
        }

        for d in blobs {
            if marked.contains(&d) {
                report.kept_blobs += 1;
                continue;
            }
            let size = fs::symlink_metadata(self.blob_path(&d))
                .map(|m| m.len())
                .unwrap_or(0);
            if !opts.dry_run {
                match self.delete(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            report.removed_bytes += size;
            report.removed_blobs.push(d);
        }
        if !opts.dry_run {
            // Records whose blob is gone (deleted outside GC) are dropped too.
            for key in snap.content.keys() {
                if let Ok(d) = key.parse::<Digest>()
                    && !self.exists(&d)
                {
                    self.db().remove_content_record(&d)?;
                }
            }
        }

        for dir in ingest_dirs {
            if let Some(r) = self.sweep_ingest(&dir, &leased_ingests, now, opts)? {
                report.removed_ingests.push(r);
            }
        }
        if !opts.dry_run {
            let leases = self.leases();
            for id in &report.expired_leases {
                match leases.delete(id) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    /// Removes one ingest directory if it is stale; returns its ref (or dir name) if removed.
    fn sweep_ingest(
        &self,
        dir: &std::path::Path,
        leased: &HashSet<String>,
        now: SystemTime,
        opts: &GcOptions,
    ) -> Result<Option<String>> {
        if ingest::is_locked(dir) {
            return Ok(None);
        }
        let disk = ingest::read(dir);
        let (name, updated) = match &disk {
            Some(d) => (d.r#ref.clone(), d.updated_at),
            None => {
                let m = match fs::symlink_metadata(dir) {
                    Ok(m) => m,
                    Err(_) => return Ok(None),
                };
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, m.modified().unwrap_or(now))
            }
        };
        if leased.contains(&name) {
            return Ok(None);
        }
        let age = now.duration_since(updated).unwrap_or_default();
        if age < opts.ingest_max_age {
            return Ok(None);
        }
        if opts.dry_run {
            return Ok(Some(name));
        }
        // Take the lock so a writer that just arrived is not robbed.
        let _lock = match ingest::lock(&self.ingest_root(), dir, &name) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::Unavailable => return Ok(None),
            Err(e) => return Err(e),
        };
        // Re-check under the lock: a writer may have resumed and written since.
        if let Some(d) = ingest::read(dir)
            && now.duration_since(d.updated_at).unwrap_or_default() < opts.ingest_max_age
        {
            return Ok(None);
        }
        fs::remove_dir_all(dir).map_err(|e| Error::io("remove", dir, e))?;
        Ok(Some(name))
    }

    /// The blobs `digest` references, with their media types, if it is an index or manifest.
    fn children(&self, digest: &Digest, media: Option<&str>) -> Vec<(Digest, Option<String>)> {
        let parse = match media.map(media_type::kind_of) {
            Some(MediaKind::Index | MediaKind::Manifest) => true,
            Some(MediaKind::Config | MediaKind::Layer(_)) => false,
            // Unknown or absent: parse small JSON documents that look like one.
            Some(MediaKind::Other) | None => true,
        };
        if !parse {
            return Vec::new();
        }
        let Ok(r) = self.reader(digest) else {
            return Vec::new();
        };
        if r.size() > MAX_DOCUMENT_SIZE {
            return Vec::new();
        }
        let mut first = [0u8; 1];
        if r.read_at(0, &mut first).unwrap_or(0) == 0 || first[0] != b'{' {
            return Vec::new();
        }
        let Ok(bytes) = self.read_all(digest, MAX_DOCUMENT_SIZE) else {
            return Vec::new();
        };
        descriptors_in(&bytes)
    }
}

/// Takes `<root>/gc.lock`, exclusively (a collection) or shared (a commit).
fn lock_gc(root: &std::path::Path, exclusive: bool) -> Result<File> {
    let lock_path = root.join("gc.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    let res = if exclusive {
        lock.lock()
    } else {
        lock.lock_shared()
    };
    res.map_err(|e| Error::io("flock", &lock_path, e))?;
    Ok(lock)
}

fn is_gc_ref_content(key: &str) -> bool {
    key == LABEL_GC_REF_CONTENT
        || key
            .strip_prefix(LABEL_GC_REF_CONTENT)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The descriptors an index or manifest document lists: `manifests[]`, `config`, `layers[]`,
/// `blobs[]` and `subject`.
pub(crate) fn descriptors_in(json: &[u8]) -> Vec<(Digest, Option<String>)> {
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    let mut take = |v: &serde_json::Value| {
        let Some(obj) = v.as_object() else { return };
        let Some(d) = obj
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse::<Digest>().ok())
        else {
            return;
        };
        let mt = obj
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_owned);
        out.insert((d, mt));
    };
    for list in ["manifests", "layers", "blobs"] {
        if let Some(arr) = doc.get(list).and_then(|v| v.as_array()) {
            arr.iter().for_each(&mut take);
        }
    }
    for one in ["config", "subject"] {
        if let Some(v) = doc.get(one) {
            take(v);
        }
    }
    out.into_iter().collect()
}
