//! The blob side of [`ContentStore`] (containerd's `Provider` + `Manager`): existence, info,
//! reads, label updates, deletion, walking with filters, and verification.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest};

use super::filter::{Filter, label_field};
use super::writer::rehash;
use super::{BlobReader, ContentStore, Info};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::labels::ContentRecord;

/// A blob whose bytes do not hash to its name (or cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    /// The blob's name.
    pub digest: Digest,
    /// What its bytes hash to, if they could be read.
    pub actual: Option<Digest>,
    /// Why it is reported.
    pub reason: String,
}

/// The result of [`ContentStore::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs checked.
    pub checked: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Blobs that failed.
    pub corrupt: Vec<CorruptBlob>,
}

impl VerifyReport {
    /// Whether every blob checked out.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty()
    }
}

impl ContentStore {
    /// Whether the blob is stored.
    pub fn exists(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// What the store knows of a blob: size, times and labels.
    ///
    /// # Errors
    /// `NotFound` ([`Error::BlobNotFound`]); `Database` on a metadata failure.
    pub fn info(&self, digest: &Digest) -> Result<Info> {
        let meta = self.blob_meta(digest)?;
        let record = self.db().content_record(digest)?;
        Ok(info_of(digest.clone(), &meta, record))
    }

    fn blob_meta(&self, digest: &Digest) -> Result<fs::Metadata> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(m),
            Ok(_) => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Opens a blob for reading.
    ///
    /// # Errors
    /// `NotFound`; `Io`.
    pub fn reader(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("fstat", &path, e))?;
        if !meta.is_file() {
            return Err(Error::BlobNotFound {
                digest: digest.clone(),
            });
        }
        Ok(BlobReader {
            file,
            size: meta.len(),
            digest: digest.clone(),
        })
    }

    /// Reads a whole blob of at most `max` bytes (manifests, indexes, configs) and checks that
    /// its bytes hash to its name.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` ([`Error::BlobTooLarge`] past `max`,
    /// [`Error::CorruptBlob`] if the bytes do not match); `Io`.
    pub fn read_all(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let mut r = self.reader(digest)?;
        if r.size() > max {
            return Err(Error::BlobTooLarge {
                digest: digest.clone(),
                size: r.size(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(r.size()).unwrap_or(0));
        let path = self.blob_path(digest);
        (&mut r)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", &path, e))?;
        let actual = Digest::of(digest.algorithm(), &buf);
        if actual != *digest {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Changes a blob's labels. With no `fieldpaths` (or `labels`) the labels are replaced by
    /// `info.labels`; `labels.<key>` sets that key from `info.labels`, or removes it when absent
    /// there. Other fields cannot change.
    ///
    /// # Errors
    /// `NotFound` if the blob is not stored; `InvalidArgument` for another field path;
    /// `Database`.
    pub fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        let meta = self.blob_meta(&info.digest)?;
        for fp in fieldpaths {
            if *fp != "labels" && !fp.starts_with("labels.") {
                return Err(Error::invalid(
                    format!("fieldpath {fp:?}"),
                    "only labels can be updated",
                ));
            }
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let rec = self.db().modify_content_record(&info.digest, |cur| {
            let mut rec = cur.unwrap_or(ContentRecord {
                labels: BTreeMap::new(),
                created: mtime,
                updated: mtime,
            });
            apply_label_update(&mut rec.labels, &info.labels, fieldpaths);
            rec.updated = SystemTime::now();
            Ok(Some(rec))
        })?;
        Ok(info_of(info.digest.clone(), &meta, rec))
    }

    /// Removes a blob and its metadata record.
    ///
    /// Deleting content that images or leases still reference is the caller's business;
    /// [`ContentStore::gc`] deletes only what nothing reaches.
    ///
    /// # Errors
    /// `NotFound`; `Io`; `Database`.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(Error::io("unlink", &path, e)),
        }
        self.db().remove_content_record(digest)
    }

    /// Every stored blob's digest (unknown algorithms and stray files are skipped).
    ///
    /// # Errors
    /// `Io` if a directory cannot be listed.
    pub fn list_digests(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root().join("blobs").join(alg.as_str());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("readdir", &dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("readdir", &dir, e))?;
                let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(d) = Digest::new(alg, &name) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Calls `f` with the info of every blob that matches `filters` (containerd syntax over
    /// `digest`, `size` and `labels.<key>`; several strings are ORed, an empty list matches
    /// all), in digest order. An error from `f` stops the walk and is returned.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter; `Io`; `Database`; or what `f` returns.
    pub fn walk(&self, filters: &[&str], mut f: impl FnMut(&Info) -> Result<()>) -> Result<()> {
        let filter = Filter::parse(filters)?;
        let records = self.db().content_records()?;
        for d in self.list_digests()? {
            let meta = match self.blob_meta(&d) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let info = info_of(d.clone(), &meta, records.get(&d.to_string()).cloned());
            let keep = filter.matches(&|p: &[String]| match p {
                [f] if f == "digest" => Some(info.digest.to_string()),
                [f] if f == "size" => Some(info.size.to_string()),
                _ => label_field(&info.labels, p),
            });
            if keep {
                f(&info)?;
            }
        }
        Ok(())
    }

    /// Re-hashes every blob and reports those whose bytes do not match their name.
    ///
    /// # Errors
    /// `Io` if the blob directories cannot be listed (unreadable blobs are reported, not
    /// returned as errors).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for d in self.list_digests()? {
            let path = self.blob_path(&d);
            report.checked += 1;
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.checked -= 1; // deleted meanwhile
                    continue;
                }
                Err(e) => {
                    report.corrupt.push(CorruptBlob {
                        digest: d,
                        actual: None,
                        reason: format!("cannot open: {e}"),
                    });
                    continue;
                }
            };
            match rehash(&mut file, d.algorithm(), &path) {
                Ok(actual) => {
                    report.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
                    if actual != d {
                        report.corrupt.push(CorruptBlob {
                            digest: d,
                            actual: Some(actual),
                            reason: "content does not match its digest".into(),
                        });
                    }
                }
                Err(e) => report.corrupt.push(CorruptBlob {
                    digest: d,
                    actual: None,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(report)
    }
}

fn info_of(digest: Digest, meta: &fs::Metadata, record: Option<ContentRecord>) -> Info {
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match record {
        Some(r) => Info {
            digest,
            size: meta.len(),
            created_at: r.created,
            updated_at: r.updated,
            labels: r.labels,
        },
        None => Info {
            digest,
            size: meta.len(),
            created_at: mtime,
            updated_at: mtime,
            labels: BTreeMap::new(),
        },
    }
}

/// Applies a containerd-style label update (`labels` / `labels.<k>` field paths).
pub(crate) fn apply_label_update(
    labels: &mut BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    fieldpaths: &[&str],
) {
    if fieldpaths.is_empty() || fieldpaths.contains(&"labels") {
        labels.clone_from(new);
        return;
    }
    for fp in fieldpaths {
        if let Some(key) = fp.strip_prefix("labels.") {
            match new.get(key) {
                Some(v) => {
                    labels.insert(key.to_owned(), v.clone());
                }
                None => {
                    labels.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::content::Expected;

    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-content-store-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn blobs_are_read_only_and_bad_input_is_refused() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        assert_eq!(
            store.writer("", None).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let d = Digest::sha256(b"x");
        let info = store
            .ingest(
                "x",
                &b"x"[..],
                &d,
                Some(1),
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(info.size, 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        // A wrong expected size fails and leaves nothing behind.
        let d2 = Digest::sha256(b"yy");
        let err = store
            .ingest(
                "y",
                &b"yy"[..],
                &d2,
                Some(1),
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(!store.exists(&d2));
        assert!(store.list_statuses(None).unwrap().is_empty());
        // A resumed ingest must agree with the total it was started with.
        drop(store.writer("z", Some(&Expected::size(10))).unwrap());
        let err = store.writer("z", Some(&Expected::size(11))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(store.abort("nope").unwrap_err().kind(), ErrorKind::NotFound);
        store.abort("z").unwrap();
        assert_eq!(store.info(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.reader(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.delete(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        store.delete(&d).unwrap();
        assert!(!store.exists(&d));
    }

    #[test]
    fn a_symlink_planted_in_blobs_is_not_followed() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        let d = Digest::sha256(b"secret");
        fs::create_dir_all(store.blob_path(&d).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, store.blob_path(&d)).unwrap();
        assert!(!store.exists(&d));
        assert!(store.reader(&d).is_err());
        assert!(store.read_all(&d, 100).is_err());
    }

    #[test]
    fn walk_filters_and_list_statuses() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for (i, lbl) in ["a", "b", "c"].iter().enumerate() {
            let body = format!("blob {i}");
            let d = Digest::sha256(body.as_bytes());
            let labels = BTreeMap::from([
                ("kind".to_owned(), (*lbl).to_owned()),
                ("containerd.io/gc.root".to_owned(), "t".to_owned()),
            ]);
            store
                .ingest(&body, body.as_bytes(), &d, None, &labels, &mut |_, _| {})
                .unwrap();
            digests.push(d);
        }
        let walk = |f: &[&str]| {
            let mut v = Vec::new();
            store
                .walk(f, |i| {
                    v.push(i.labels["kind"].clone());
                    Ok(())
                })
                .unwrap();
            v.sort();
            v
        };
        assert_eq!(walk(&[]), ["a", "b", "c"]);
        assert_eq!(walk(&["labels.kind==a"]), ["a"]);
        assert_eq!(walk(&["labels.kind==a", "labels.kind==c"]), ["a", "c"]);
        assert_eq!(
            walk(&["labels.kind!=a,labels.\"containerd.io/gc.root\""]),
            ["b", "c"]
        );
        assert_eq!(walk(&[&format!("digest=={}", digests[1])]), ["b"]);
        assert!(walk(&["labels.missing"]).is_empty());
        let err = store.walk(&["labels.kind=="], |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);

        for r in ["layer-1", "layer-2", "config"] {
            drop(store.writer(r, None).unwrap());
        }
        let refs = |f: Option<&str>| -> Vec<String> {
            store
                .list_statuses(f)
                .unwrap()
                .into_iter()
                .map(|s| s.r#ref)
                .collect()
        };
        assert_eq!(refs(None), ["config", "layer-1", "layer-2"]);
        assert_eq!(refs(Some("ref~=^layer-")), ["layer-1", "layer-2"]);
        assert_eq!(refs(Some("ref==config")), ["config"]);
    }

    #[test]
    fn verify_reports_a_blob_whose_bytes_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for body in [&b"intact"[..], b"to be damaged"] {
            let d = Digest::sha256(body);
            store
                .ingest("v", body, &d, None, &BTreeMap::new(), &mut |_, _| {})
                .unwrap();
            digests.push(d);
        }
        let report = store.verify().unwrap();
        assert!(report.is_ok());
        assert_eq!(report.checked, 2);
        assert_eq!(report.bytes, 6 + 13);

        let path = store.blob_path(&digests[1]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"to be DAMAGED").unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].digest, digests[1]);
        assert_eq!(
            report.corrupt[0].actual,
            Some(Digest::sha256(b"to be DAMAGED"))
        );
        let err = store.read_all(&digests[1], 100).unwrap_err();
        assert!(matches!(err, Error::CorruptBlob { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn info_times_of_unlabelled_blobs_come_from_the_commit() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::sha256(b"t");
        let before = SystemTime::now();
        store
            .ingest("t", &b"t"[..], &d, None, &BTreeMap::new(), &mut |_, _| {})
            .unwrap();
        let after = SystemTime::now();
        let info = store.info(&d).unwrap();
        assert!(info.created_at >= before && info.created_at <= after);
        assert_eq!(info.created_at, info.updated_at);
        assert!(
            store.db().content_record(&d).unwrap().is_none(),
            "no record needed"
        );
        let mut new = info.clone();
        new.labels.insert("k".into(), "v".into());
        let updated = store.update(&new, &["labels.k"]).unwrap();
        assert_eq!(
            updated.created_at, info.created_at,
            "created stays the commit time"
        );
        assert!(updated.updated_at >= after);
        assert_eq!(store.info(&d).unwrap().labels["k"], "v");
        store.delete(&d).unwrap();
        assert!(
            store.db().content_record(&d).unwrap().is_none(),
            "record removed"
        );
    }
}
