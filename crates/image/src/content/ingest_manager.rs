//! The ingest side of [`ContentStore`] (containerd's `Ingester` + `IngestManager`): opening,
//! resuming and recreating ingests, their statuses, and aborting them.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, Digester};

use super::filter::Filter;
use super::ingest::{self, OnDisk};
use super::{ContentStore, Expected, Status, Writer};
use crate::error::{Error, Result};
use crate::metadata::LeaseResource;

impl ContentStore {
    /// Opens the ingest named `ref`, resuming it if it exists.
    ///
    /// `expected` tells what the content will be: the digest picks the hashing algorithm (sha256
    /// by default) and, if the blob is already stored, makes this call fail fast with
    /// `AlreadyExists`; the size is recorded as the ingest's total.
    ///
    /// On resume the offset is the length of the data on disk; the digest state is the saved
    /// one (if any) plus the bytes written after it was saved. A damaged ingest (no readable
    /// `ref` or data) is recreated.
    ///
    /// # Errors
    /// - `InvalidArgument`: empty ref; or the ingest was started with another total or digest.
    /// - `AlreadyExists` ([`Error::BlobExists`]): the expected digest is already stored.
    /// - `Unavailable` ([`Error::RefLocked`]): another writer (any process) holds the ref.
    /// - `Io` on system failures.
    pub fn writer(&self, r#ref: &str, expected: Option<&Expected>) -> Result<Writer> {
        if r#ref.is_empty() {
            return Err(Error::invalid("ref", "a writer needs a non-empty ref"));
        }
        let none = Expected::default();
        let expected = expected.unwrap_or(&none);
        if let Some(d) = &expected.digest {
            // For a leased handle, "already there" must stay true until the lease holds it.
            let _fence = match self.lease() {
                Some(_) => Some(self.gc_fence()?),
                None => None,
            };
            if self.exists(d) {
                self.hold(LeaseResource::Content(d.clone()))?;
                return Err(Error::BlobExists { digest: d.clone() });
            }
        }
        let dir = self.ingest_dir(r#ref);
        self.hold(LeaseResource::Ingest(r#ref.to_owned()))?;
        let lock = ingest::lock(&self.ingest_root(), &dir, r#ref)?;
        if let Some(disk) = ingest::read(&dir) {
            if disk.r#ref != r#ref {
                tracing::warn!(r#ref, found = %disk.r#ref, "ingest dir holds another ref; recreating");
            } else {
                check_agrees(r#ref, &disk, expected)?;
                match self.resume(&dir, disk, expected) {
                    Ok(parts) => return Ok(self.assemble(r#ref, dir, parts, lock)),
                    Err(e) => {
                        tracing::warn!(r#ref, error = %e, "cannot resume ingest; recreating");
                    }
                }
            }
        }
        let parts = self.create_ingest(&dir, r#ref, expected)?;
        Ok(self.assemble(r#ref, dir, parts, lock))
    }

    fn assemble(
        &self,
        r#ref: &str,
        dir: PathBuf,
        parts: Parts,
        lock: ingest::IngestLock,
    ) -> Writer {
        Writer {
            store: self.clone(),
            r#ref: r#ref.to_owned(),
            dir,
            data: parts.data,
            digester: parts.digester,
            checkpointed: parts.checkpointed,
            total: parts.total,
            expected: parts.expected,
            started_at: parts.started_at,
            updated_at: parts.updated_at,
            dirty: false,
            _lock: lock,
        }
    }

    fn resume(&self, dir: &Path, disk: OnDisk, expected: &Expected) -> Result<Parts> {
        let path = dir.join(ingest::DATA);
        let mut data =
            ingest::open_nofollow(&path, false, false).map_err(|e| Error::io("open", &path, e))?;
        let exp = disk.expected.clone().or_else(|| expected.digest.clone());
        let alg = exp
            .as_ref()
            .map(Digest::algorithm)
            .unwrap_or(Algorithm::Sha256);
        let data_len = data
            .metadata()
            .map_err(|e| Error::io("fstat", &path, e))?
            .len();
        // Continue from the saved hash state when it covers a prefix of the data; hash the
        // rest (everything, without a usable state).
        let saved = fs::read(dir.join(ingest::STATE))
            .ok()
            .and_then(|b| Digester::restore_state(alg, &b).ok())
            .filter(|d| d.len() <= data_len);
        let mut digester = saved.unwrap_or_else(|| Digester::new(alg));
        let checkpointed = digester.len();
        data.seek(SeekFrom::Start(digester.len()))
            .map_err(|e| Error::io("seek", &path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| Error::io("read", &path, e))?;
            if n == 0 {
                break;
            }
            digester.update(&buf[..n]);
        }
        let total = disk.total.or(expected.size);
        if disk.total.is_none()
            && let Some(t) = total
        {
            ingest::write_atomic(dir, ingest::TOTAL, t.to_string().as_bytes())?;
        }
        if disk.expected.is_none()
            && let Some(d) = &exp
        {
            ingest::write_atomic(dir, ingest::EXPECTED, d.to_string().as_bytes())?;
        }
        Ok(Parts {
            data,
            digester,
            checkpointed,
            total,
            expected: exp,
            started_at: disk.started_at,
            updated_at: disk.updated_at,
        })
    }

    fn create_ingest(&self, dir: &Path, r#ref: &str, expected: &Expected) -> Result<Parts> {
        // Clear what a half-made or foreign ingest left (everything but the held lock).
        for name in [
            ingest::REF,
            ingest::DATA,
            ingest::TOTAL,
            ingest::EXPECTED,
            ingest::STARTED_AT,
            ingest::UPDATED_AT,
            ingest::STATE,
        ] {
            let p = dir.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("unlink", &p, e)),
            }
        }
        let now = SystemTime::now();
        let path = dir.join(ingest::DATA);
        let data =
            ingest::open_nofollow(&path, true, true).map_err(|e| Error::io("create", &path, e))?;
        ingest::write_time(dir, ingest::STARTED_AT, now)?;
        ingest::write_time(dir, ingest::UPDATED_AT, now)?;
        if let Some(t) = expected.size {
            ingest::write_atomic(dir, ingest::TOTAL, t.to_string().as_bytes())?;
        }
        if let Some(d) = &expected.digest {
            ingest::write_atomic(dir, ingest::EXPECTED, d.to_string().as_bytes())?;
        }
        // `ref` last: its presence marks a started ingest.
        ingest::write_atomic(dir, ingest::REF, r#ref.as_bytes())?;
        let alg = expected
            .digest
            .as_ref()
            .map(Digest::algorithm)
            .unwrap_or(Algorithm::Sha256);
        Ok(Parts {
            data,
            digester: Digester::new(alg),
            checkpointed: 0,
            total: expected.size,
            expected: expected.digest.clone(),
            started_at: now,
            updated_at: now,
        })
    }

    /// The status of the ingest named `ref` (read without taking its lock).
    ///
    /// # Errors
    /// `NotFound` ([`Error::IngestNotFound`]) if no such ingest exists.
    pub fn status(&self, r#ref: &str) -> Result<Status> {
        match ingest::read(&self.ingest_dir(r#ref)) {
            Some(d) if d.r#ref == r#ref => Ok(status_of(d)),
            _ => Err(Error::IngestNotFound {
                r#ref: r#ref.to_owned(),
            }),
        }
    }

    /// The statuses of all ingests, optionally filtered (containerd filter syntax over the
    /// fields `ref` and `expected`, e.g. `ref~=^layer-`), sorted by ref.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter; `Io` if the ingest directory cannot be listed.
    pub fn list_statuses(&self, filter: Option<&str>) -> Result<Vec<Status>> {
        let filter = Filter::parse(filter.as_slice())?;
        let mut out = Vec::new();
        for dir in ingest::list_dirs(&self.ingest_root())? {
            let Some(d) = ingest::read(&dir) else {
                continue;
            };
            let st = status_of(d);
            let keep = filter.matches(&|p: &[String]| match p {
                [f] if f == "ref" => Some(st.r#ref.clone()),
                [f] if f == "expected" => st.expected.as_ref().map(ToString::to_string),
                _ => None,
            });
            if keep {
                out.push(st);
            }
        }
        out.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(out)
    }

    /// Removes the ingest named `ref` and its data.
    ///
    /// # Errors
    /// `NotFound` if there is no such ingest; `Unavailable` if a writer holds it; `Io`.
    pub fn abort(&self, r#ref: &str) -> Result<()> {
        let dir = self.ingest_dir(r#ref);
        let not_found = || Error::IngestNotFound {
            r#ref: r#ref.to_owned(),
        };
        if fs::symlink_metadata(&dir).is_err() {
            return Err(not_found());
        }
        let _lock = ingest::lock(&self.ingest_root(), &dir, r#ref)?;
        let started = ingest::read(&dir).is_some_and(|d| d.r#ref == r#ref);
        fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
        if started { Ok(()) } else { Err(not_found()) }
    }
}

pub(crate) struct Parts {
    data: File,
    digester: Digester,
    checkpointed: u64,
    total: Option<u64>,
    expected: Option<Digest>,
    started_at: SystemTime,
    updated_at: SystemTime,
}

fn check_agrees(r#ref: &str, disk: &OnDisk, expected: &Expected) -> Result<()> {
    if let (Some(have), Some(want)) = (disk.total, expected.size)
        && have != want
    {
        return Err(Error::invalid(
            format!("ref {ref:?}"),
            format!("the ingest was started with total {have}, not {want}"),
        ));
    }
    if let (Some(have), Some(want)) = (&disk.expected, &expected.digest)
        && have != want
    {
        return Err(Error::invalid(
            format!("ref {ref:?}"),
            format!("the ingest was started expecting {have}, not {want}"),
        ));
    }
    Ok(())
}

fn status_of(d: OnDisk) -> Status {
    Status {
        r#ref: d.r#ref,
        offset: d.offset,
        total: d.total,
        expected: d.expected,
        started_at: d.started_at,
        updated_at: d.updated_at,
    }
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use crate::error::ErrorKind;

    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-content-store-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn resume_uses_saved_state_and_hashes_only_the_tail() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = store.writer("s", None).unwrap();
        w.write_all(&data[..40_000]).unwrap();
        drop(w);
        let ingest_dir = store.ingest_dir("s");
        let state = fs::read(ingest_dir.join(ingest::STATE)).unwrap();
        let saved = Digester::restore_state(Algorithm::Sha256, &state).unwrap();
        assert_eq!(
            saved.len(),
            40_000,
            "the drop saved the state of every byte"
        );

        // A crashed writer appended more after the state was saved: only that tail is hashed.
        let mut f = ingest::open_nofollow(&ingest_dir.join(ingest::DATA), false, false).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&data[40_000..70_000]).unwrap();
        let mut w = store.writer("s", None).unwrap();
        assert_eq!(w.offset(), 70_000);
        assert_eq!(w.digest(), Digest::sha256(&data[..70_000]));
        w.write_all(&data[70_000..]).unwrap();
        let info = w
            .commit(100_000, Some(&Digest::sha256(&data)), &BTreeMap::new())
            .unwrap();
        assert_eq!(info.size, 100_000);
    }

    #[test]
    fn damaged_or_overlong_state_falls_back_to_a_full_hash() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = vec![42u8; 10_000];
        let mut w = store.writer("s", None).unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        let ingest_dir = store.ingest_dir("s");
        let state_path = ingest_dir.join(ingest::STATE);
        let mut state = fs::read(&state_path).unwrap();
        let last = state.len() - 1;
        state[last] ^= 1;
        fs::write(&state_path, &state).unwrap();
        let w = store.writer("s", None).unwrap();
        assert_eq!(w.digest(), Digest::sha256(&data));
        drop(w);
        // A state longer than the data (the data lost its tail) is ignored too.
        let f = ingest::open_nofollow(&ingest_dir.join(ingest::DATA), false, false).unwrap();
        f.set_len(5_000).unwrap();
        let w = store.writer("s", None).unwrap();
        assert_eq!(w.offset(), 5_000);
        assert_eq!(w.digest(), Digest::sha256(&data[..5_000]));
    }

    #[test]
    fn truncate_discards_bytes_and_state() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer("t", None).unwrap();
        w.write_all(b"wrong bytes").unwrap();
        drop(w);
        let mut w = store.writer("t", None).unwrap();
        assert_eq!(
            w.truncate(3).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        w.truncate(0).unwrap();
        assert!(!store.ingest_dir("t").join(ingest::STATE).exists());
        w.write_all(b"right").unwrap();
        drop(w);
        let w = store.writer("t", None).unwrap();
        assert_eq!(w.digest(), Digest::sha256(b"right"));
    }

    #[test]
    fn sha512_content_lands_under_its_algorithm() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"five hundred and twelve";
        let d = Digest::of(Algorithm::Sha512, data);
        let mut w = store
            .writer("s512", Some(&Expected::digest(d.clone())))
            .unwrap();
        w.write_all(data).unwrap();
        assert_eq!(w.digest(), d, "the expected digest picks the algorithm");
        drop(w);
        let w = store
            .writer("s512", Some(&Expected::digest(d.clone())))
            .unwrap();
        assert_eq!(w.digest(), d, "and a resume keeps it");
        w.commit(0, None, &BTreeMap::new()).unwrap();
        assert!(
            store
                .blob_path(&d)
                .starts_with(dir.path().canonicalize().unwrap().join("blobs/sha512"))
        );
        assert_eq!(store.read_all(&d, 100).unwrap(), data);
        // A writer hashing sha256 can still be committed against a sha512 expectation.
        let other = b"committed against another algorithm";
        let d2 = Digest::of(Algorithm::Sha512, other);
        let mut w = store.writer("mixed", None).unwrap();
        w.write_all(other).unwrap();
        assert_eq!(w.commit(0, Some(&d2), &BTreeMap::new()).unwrap().digest, d2);
        assert_eq!(store.list_digests().unwrap().len(), 2);
        assert!(store.verify().unwrap().is_ok());
    }

    #[test]
    fn an_ingest_dir_replaced_by_a_symlink_is_refused() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.ingest_dir("evil")).unwrap();
        let err = store.writer("evil", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written there"
        );
    }
}
