//! Runs containerd's content-store conformance suite against [`ContentStore`], one test per
//! case, and against a small in-memory [`Store`] written here, which shows that the suite
//! depends only on the traits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::path::Path;

use berth_image::content::{ContentStore, testsuite};

fn open(root: &Path) -> berth_image::Result<ContentStore> {
    ContentStore::open(root)
}

fn open_memory(_root: &Path) -> berth_image::Result<memory::MemStore> {
    Ok(memory::MemStore::default())
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            testsuite::$name(&open);
        }
    )*};
}

suite!(
    writer,
    update_status,
    commit_exists,
    resume,
    resume_truncate,
    resume_discard,
    resume_copy,
    resume_copy_seeker,
    resume_copy_reader_at,
    small_blob,
    labels,
    commit_error_state,
);

/// The suite also passes when every step goes through a second handle on the same root (as a
/// second process would see it).
#[test]
fn all_cases_through_a_reopened_root() {
    testsuite::run_all(&|root: &Path| {
        let first = ContentStore::open(root)?;
        drop(first);
        ContentStore::open(root)
    });
}

/// Every case against the in-memory implementation.
#[test]
fn all_cases_against_an_in_memory_store() {
    testsuite::run_all(&open_memory);
}

/// A deliberately broken implementation (commit never checks the digest) is caught.
#[test]
fn the_suite_catches_a_store_that_skips_verification() {
    let res = std::panic::catch_unwind(|| {
        testsuite::commit_error_state(&|_: &Path| Ok(memory::MemStore::skipping_digest_checks()));
    });
    assert!(
        res.is_err(),
        "a store that commits wrong digests must fail CommitErrorState"
    );
}

mod memory {
    //! A minimal in-memory content store implementing the suite's traits.

    use std::collections::{BTreeMap, HashMap};
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use berth_image::content::{ContentWriter, Expected, Info, Status, Store};
    use berth_image::{Error, Result};
    use berth_oci::{Algorithm, Digest, Digester};

    #[derive(Debug, Default)]
    struct Ingest {
        data: Vec<u8>,
        total: Option<u64>,
        expected: Option<Digest>,
        started: Option<SystemTime>,
        updated: Option<SystemTime>,
        locked: bool,
    }

    #[derive(Debug, Default)]
    struct Inner {
        blobs: HashMap<Digest, (Vec<u8>, Info)>,
        ingests: HashMap<String, Ingest>,
    }

    #[derive(Debug, Default, Clone)]
    pub struct MemStore {
        inner: Arc<Mutex<Inner>>,
        skip_digest_check: bool,
    }

    #[derive(Debug)]
    pub struct MemWriter {
        store: MemStore,
        r#ref: String,
        digester: Digester,
    }

    fn status_of(r#ref: &str, i: &Ingest) -> Status {
        Status {
            r#ref: r#ref.to_owned(),
            offset: i.data.len() as u64,
            total: i.total,
            expected: i.expected.clone(),
            started_at: i.started.unwrap_or(SystemTime::UNIX_EPOCH),
            updated_at: i.updated.unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    impl Store for MemStore {
        type Writer = MemWriter;

        fn writer(&self, r#ref: &str, expected: Option<&Expected>) -> Result<MemWriter> {
            if r#ref.is_empty() {
                return Err(Error::invalid("ref", "empty"));
            }
            let exp = expected.cloned().unwrap_or_default();
            let mut g = self.inner.lock().unwrap();
            if let Some(d) = &exp.digest
                && g.blobs.contains_key(d)
            {
                return Err(Error::BlobExists { digest: d.clone() });
            }
            let now = SystemTime::now();
            let ing = g.ingests.entry(r#ref.to_owned()).or_insert_with(|| Ingest {
                total: exp.size,
                expected: exp.digest.clone(),
                started: Some(now),
                updated: Some(now),
                ..Default::default()
            });
            if ing.locked {
                return Err(Error::RefLocked {
                    r#ref: r#ref.to_owned(),
                });
            }
            if let (Some(a), Some(b)) = (ing.total, exp.size)
                && a != b
            {
                return Err(Error::invalid(r#ref, "total differs"));
            }
            ing.locked = true;
            let alg = ing
                .expected
                .as_ref()
                .map(Digest::algorithm)
                .unwrap_or(Algorithm::Sha256);
            let mut digester = Digester::new(alg);
            digester.update(&ing.data);
            Ok(MemWriter {
                store: self.clone(),
                r#ref: r#ref.to_owned(),
                digester,
            })
        }

        fn status(&self, r#ref: &str) -> Result<Status> {
            let g = self.inner.lock().unwrap();
            g.ingests
                .get(r#ref)
                .map(|i| status_of(r#ref, i))
                .ok_or_else(|| Error::IngestNotFound {
                    r#ref: r#ref.to_owned(),
                })
        }

        fn abort(&self, r#ref: &str) -> Result<()> {
            let mut g = self.inner.lock().unwrap();
            match g.ingests.get(r#ref) {
                None => Err(Error::IngestNotFound {
                    r#ref: r#ref.to_owned(),
                }),
                Some(i) if i.locked => Err(Error::RefLocked {
                    r#ref: r#ref.to_owned(),
                }),
                Some(_) => {
                    g.ingests.remove(r#ref);
                    Ok(())
                }
            }
        }

        fn info(&self, digest: &Digest) -> Result<Info> {
            let g = self.inner.lock().unwrap();
            g.blobs
                .get(digest)
                .map(|(_, i)| i.clone())
                .ok_or_else(|| Error::BlobNotFound {
                    digest: digest.clone(),
                })
        }

        fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
            let mut g = self.inner.lock().unwrap();
            let Some((_, cur)) = g.blobs.get_mut(&info.digest) else {
                return Err(Error::BlobNotFound {
                    digest: info.digest.clone(),
                });
            };
            if fieldpaths.is_empty() || fieldpaths.contains(&"labels") {
                cur.labels = info.labels.clone();
            } else {
                for fp in fieldpaths {
                    let Some(k) = fp.strip_prefix("labels.") else {
                        return Err(Error::invalid(*fp, "only labels can change"));
                    };
                    match info.labels.get(k) {
                        Some(v) => cur.labels.insert(k.to_owned(), v.clone()),
                        None => cur.labels.remove(k),
                    };
                }
            }
            cur.updated_at = SystemTime::now();
            Ok(cur.clone())
        }

        fn delete(&self, digest: &Digest) -> Result<()> {
            let mut g = self.inner.lock().unwrap();
            g.blobs
                .remove(digest)
                .map(|_| ())
                .ok_or_else(|| Error::BlobNotFound {
                    digest: digest.clone(),
                })
        }

        fn read_at(&self, digest: &Digest, offset: u64, buf: &mut [u8]) -> Result<usize> {
            let g = self.inner.lock().unwrap();
            let (data, _) = g.blobs.get(digest).ok_or_else(|| Error::BlobNotFound {
                digest: digest.clone(),
            })?;
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
    }

    impl MemStore {
        pub fn skipping_digest_checks() -> Self {
            MemStore {
                skip_digest_check: true,
                ..Default::default()
            }
        }
    }

    impl MemWriter {
        fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
            f(&mut self.store.inner.lock().unwrap())
        }
    }

    impl Write for MemWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let r = self.r#ref.clone();
            self.with(|g| {
                let i = g.ingests.get_mut(&r).expect("ingest of a live writer");
                i.data.extend_from_slice(buf);
                i.updated = Some(SystemTime::now());
            });
            self.digester.update(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for MemWriter {
        fn drop(&mut self) {
            let r = self.r#ref.clone();
            self.with(|g| {
                if let Some(i) = g.ingests.get_mut(&r) {
                    i.locked = false;
                }
            });
        }
    }

    impl ContentWriter for MemWriter {
        fn ingest_ref(&self) -> &str {
            &self.r#ref
        }

        fn digest(&self) -> Digest {
            self.digester.current()
        }

        fn offset(&self) -> u64 {
            self.digester.len()
        }

        fn status(&self) -> Status {
            self.with(|g| status_of(&self.r#ref, &g.ingests[&self.r#ref]))
        }

        fn truncate(&mut self, size: u64) -> Result<()> {
            if size != 0 {
                return Err(Error::invalid("size", "only 0"));
            }
            let r = self.r#ref.clone();
            self.with(|g| g.ingests.get_mut(&r).expect("live ingest").data.clear());
            self.digester = Digester::new(self.digester.algorithm());
            Ok(())
        }

        fn commit(
            self,
            size: u64,
            expected: Option<&Digest>,
            labels: &BTreeMap<String, String>,
        ) -> Result<Info> {
            let r = self.r#ref.clone();
            let skip = self.store.skip_digest_check;
            self.with(|g| {
                let ing = &g.ingests[&r];
                let actual = ing.data.len() as u64;
                if size > 0 && size != actual {
                    return Err(Error::SizeMismatch {
                        r#ref: r.clone(),
                        expected: size,
                        actual,
                    });
                }
                let exp = expected.cloned().or_else(|| ing.expected.clone());
                let d = Digest::of(
                    exp.as_ref().map_or(Algorithm::Sha256, Digest::algorithm),
                    &ing.data,
                );
                if let Some(e) = exp
                    && e != d
                    && !skip
                {
                    return Err(Error::DigestMismatch {
                        r#ref: r.clone(),
                        expected: e,
                        actual: d,
                    });
                }
                let ing = g.ingests.remove(&r).expect("present");
                if g.blobs.contains_key(&d) {
                    return Err(Error::BlobExists { digest: d });
                }
                let now = SystemTime::now();
                let info = Info {
                    digest: d.clone(),
                    size: actual,
                    created_at: now,
                    updated_at: now,
                    labels: labels.clone(),
                };
                g.blobs.insert(d, (ing.data, info.clone()));
                Ok(info)
            })
        }
    }
}
