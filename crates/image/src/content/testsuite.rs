//! containerd's content-store conformance suite, as reusable Rust functions (feature
//! `testsuite`).
//!
//! Each case takes a **factory** that opens a fresh store at the root directory it is given; the
//! case makes (and removes) a temporary directory for it, and panics with a message naming what
//! failed, like an assertion. Run them from a test binary, one `#[test]` per case, or all at once
//! with [`run_all`]. The cases and their names follow containerd's `ContentSuite`: `Writer`,
//! `UpdateStatus`, `CommitExists`, `Resume`, `ResumeTruncate`, `ResumeDiscard`, `ResumeCopy`,
//! `ResumeCopySeeker`, `ResumeCopyReaderAt`, `SmallBlob`, `Labels`, `CommitErrorState`.
//!
//! The cases are generic over [`Store`], so any implementation can run them; a factory may also
//! wrap the reference [`ContentStore`](super::ContentStore) any way it likes (a root opened by
//! two handles, a store reopened between steps).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use berth_oci::Digest;

use super::api::{ContentWriter, Store};
use super::copy::Copied;
use super::{Expected, Info, LABEL_GC_ROOT, Status};
use crate::error::{ErrorKind, Result};

/// Opens a fresh store at the given root.
pub type Factory<'a, S> = &'a dyn Fn(&Path) -> Result<S>;

/// Runs every case.
pub fn run_all<S: Store>(factory: Factory<'_, S>) {
    writer(factory);
    update_status(factory);
    commit_exists(factory);
    resume(factory);
    resume_truncate(factory);
    resume_discard(factory);
    resume_copy(factory);
    resume_copy_seeker(factory);
    resume_copy_reader_at(factory);
    small_blob(factory);
    labels(factory);
    commit_error_state(factory);
}

fn with_store<S: Store>(name: &str, factory: Factory<'_, S>, f: impl FnOnce(&S)) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("berth-content-suite-{name}-"))
        .tempdir()
        .expect("create temp dir");
    let store = factory(tmp.path()).unwrap_or_else(|e| panic!("{name}: factory failed: {e}"));
    f(&store);
}

static SEED: AtomicU64 = AtomicU64::new(1);

/// Deterministic pseudo-random content of `size` bytes, different on every call.
pub fn create_content(size: usize) -> (Vec<u8>, Digest) {
    let mut x = SEED
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut b = Vec::with_capacity(size);
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(size);
    let d = Digest::sha256(&b);
    (b, d)
}

fn gc_root_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_GC_ROOT.to_owned(), "2026-11-26T00:00:00Z".to_owned())])
}

fn no_progress() -> impl FnMut(u64, Option<u64>) {
    |_, _| {}
}

fn within(what: &str, t: SystemTime, lo: SystemTime, hi: SystemTime) {
    assert!(
        t >= lo && t <= hi,
        "{what}: {t:?} not within [{lo:?}, {hi:?}]"
    );
}

fn check_info<S: Store>(
    store: &S,
    d: &Digest,
    size: u64,
    labels: &BTreeMap<String, String>,
    created: (SystemTime, SystemTime),
    updated: (SystemTime, SystemTime),
) {
    let info = store
        .info(d)
        .unwrap_or_else(|e| panic!("info {d} failed: {e}"));
    assert_eq!(&info.digest, d, "info digest");
    assert_eq!(info.size, size, "info size of {d}");
    within("created at", info.created_at, created.0, created.1);
    within("updated at", info.updated_at, updated.0, updated.1);
    assert_eq!(&info.labels, labels, "labels of {d}");
}

fn check_status<W: ContentWriter>(
    w: &W,
    expected: &Status,
    digest: &Digest,
    started: (SystemTime, SystemTime),
    updated: (SystemTime, SystemTime),
) {
    let st = w.status();
    assert_eq!(&w.digest(), digest, "writer digest");
    assert_eq!(st.r#ref, expected.r#ref, "status ref");
    assert_eq!(st.offset, expected.offset, "status offset");
    assert_eq!(st.total, expected.total, "status total");
    within("started at", st.started_at, started.0, started.1);
    within("updated at", st.updated_at, updated.0, updated.1);
}

fn write_blob<S: Store>(store: &S, r#ref: &str, data: &[u8], d: &Digest) {
    let w = store
        .writer(r#ref, Some(&Expected::digest(d.clone())))
        .unwrap_or_else(|e| panic!("write blob {ref}: {e}"));
    super::copy(w, data, None, d, &BTreeMap::new(), &mut no_progress())
        .unwrap_or_else(|e| panic!("write blob {ref}: {e}"));
}

/// Reads a whole blob through `read_at`, asking for up to `ask` bytes.
fn read_blob<S: Store>(store: &S, d: &Digest, ask: usize) -> Vec<u8> {
    let mut out = vec![0u8; ask];
    let mut at = 0;
    while at < ask {
        let n = store.read_at(d, at as u64, &mut out[at..]).unwrap();
        if n == 0 {
            break;
        }
        at += n;
    }
    out.truncate(at);
    out
}

/// `Writer`: four writers open at once (no expectation, size only, digest only, both), written
/// in small chunks and committed with labels; the infos are right.
pub fn writer<S: Store>(factory: Factory<'_, S>) {
    with_store("writer", factory, |cs| {
        let contents: Vec<(Vec<u8>, Digest)> = (0..4).map(|_| create_content(256)).collect();
        let expectations = [
            None,
            Some(Expected::size(256)),
            Some(Expected::digest(contents[2].1.clone())),
            Some(Expected::new(contents[3].1.clone(), 256)),
        ];
        let mut writers: Vec<S::Writer> = expectations
            .iter()
            .enumerate()
            .map(|(i, e)| cs.writer(&format!("c{}", i + 1), e.as_ref()).unwrap())
            .collect();
        for (w, (content, d)) in writers.iter_mut().zip(&contents) {
            for chunk in content.chunks(32) {
                w.write_all(chunk).unwrap();
            }
            assert_eq!(&w.digest(), d, "digest before commit");
        }
        let labels = gc_root_labels();
        for (w, (content, d)) in writers.into_iter().zip(&contents) {
            let pre = SystemTime::now();
            let info = w.commit(0, None, &labels).unwrap();
            let post = SystemTime::now();
            assert_eq!(&info.digest, d);
            check_info(
                cs,
                d,
                content.len() as u64,
                &labels,
                (pre, post),
                (pre, post),
            );
        }
    });
}

/// `UpdateStatus`: offset, total, digest and times follow each write.
pub fn update_status<S: Store>(factory: Factory<'_, S>) {
    with_store("update-status", factory, |cs| {
        let (c1, d1) = create_content(256);
        let pre_start = SystemTime::now();
        let mut w = cs
            .writer("c1", Some(&Expected::new(d1.clone(), 256)))
            .unwrap();
        let post_start = SystemTime::now();
        let mut expected = Status {
            r#ref: "c1".into(),
            offset: 0,
            total: Some(256),
            expected: Some(d1.clone()),
            started_at: pre_start,
            updated_at: pre_start,
        };
        let started = (pre_start, post_start);
        check_status(&w, &expected, &Digest::sha256(b""), started, started);
        for (from, to) in [(0, 64), (64, 192), (192, 256)] {
            let pre = SystemTime::now();
            w.write_all(&c1[from..to]).unwrap();
            let post = SystemTime::now();
            expected.offset = to as u64;
            check_status(
                &w,
                &expected,
                &Digest::sha256(&c1[..to]),
                started,
                (pre, post),
            );
            assert_eq!(cs.status("c1").unwrap().offset, to as u64, "store status");
        }
        let labels = gc_root_labels();
        let pre = SystemTime::now();
        w.commit(0, None, &labels).unwrap();
        let post = SystemTime::now();
        check_info(cs, &d1, 256, &labels, (pre, post), (pre, post));
        assert_eq!(cs.status("c1").unwrap_err().kind(), ErrorKind::NotFound);
    });
}

/// `CommitExists`: committing content that is already stored is `AlreadyExists`, with or
/// without an expected digest.
pub fn commit_exists<S: Store>(factory: Factory<'_, S>) {
    with_store("commit-exists", factory, |cs| {
        let (c1, d1) = create_content(256);
        write_blob(cs, "c1", &c1, &d1);
        for (i, expected) in [Some(&d1), None].into_iter().enumerate() {
            let r = format!("c1-commitexists-{i}");
            let mut w = cs.writer(&r, None).unwrap();
            w.write_all(&c1).unwrap();
            let err = w
                .commit(c1.len() as u64, expected, &BTreeMap::new())
                .expect_err("commit of existing content must fail");
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "({i}) {err}");
            // AlreadyExists aborts the ingest.
            assert_eq!(cs.status(&r).unwrap_err().kind(), ErrorKind::NotFound);
        }
    });
}

/// `Resume`: a writer closed half-way is reopened at its offset with the same status, and
/// finishes.
pub fn resume<S: Store>(factory: Factory<'_, S>) {
    with_store("resume", factory, |cs| {
        let (cb, d) = create_content(256);
        let (first, second) = cb.split_at(128);
        let exp = Expected::new(d.clone(), 256);
        let pre_start = SystemTime::now();
        let mut w1 = cs.writer("cb", Some(&exp)).unwrap();
        let post_start = SystemTime::now();
        let pre_update = post_start;
        w1.write_all(first).unwrap();
        let post_update = SystemTime::now();
        let d_first = Digest::sha256(first);
        let mut expected = Status {
            r#ref: "cb".into(),
            offset: 128,
            total: Some(256),
            expected: Some(d.clone()),
            started_at: pre_start,
            updated_at: pre_update,
        };
        let started = (pre_start, post_start);
        check_status(&w1, &expected, &d_first, started, (pre_update, post_update));
        drop(w1);

        let mut w2 = cs.writer("cb", Some(&exp)).unwrap();
        check_status(&w2, &expected, &d_first, started, (pre_update, post_update));
        let pre_update = SystemTime::now();
        w2.write_all(second).unwrap();
        let post_update = SystemTime::now();
        expected.offset = 256;
        check_status(&w2, &expected, &d, started, (pre_update, post_update));
        let pre = SystemTime::now();
        w2.commit(0, None, &BTreeMap::new()).unwrap();
        let post = SystemTime::now();
        check_info(cs, &d, 256, &BTreeMap::new(), (pre, post), (pre, post));
    });
}

/// How a resume case finishes a reopened writer: `(writer, content, written, digest)`.
type ResumeFn<W> = dyn Fn(W, &[u8], usize, &Digest) -> Result<()>;

fn check_resume<S: Store>(name: &str, factory: Factory<'_, S>, finish: &ResumeFn<S::Writer>) {
    with_store(name, factory, |cs| {
        for (i, size) in [500usize, 5000, 50000].into_iter().enumerate() {
            for (j, tp) in [0.0, 0.1, 0.5, 0.9, 1.0].into_iter().enumerate() {
                let (b, d) = create_content(size);
                let limit = (size as f64 * tp) as usize;
                let r = format!("ref-{i}-{j}");
                let exp = Expected::new(d.clone(), size as u64);
                let mut w = cs.writer(&r, Some(&exp)).unwrap();
                w.write_all(&b[..limit]).unwrap();
                drop(w);
                let w = cs.writer(&r, Some(&exp)).unwrap();
                assert_eq!(w.status().offset, limit as u64, "{name} {r}: offset");
                let pre = SystemTime::now();
                finish(w, &b, limit, &d).unwrap_or_else(|e| panic!("{name} {r}: {e}"));
                let post = SystemTime::now();
                check_info(
                    cs,
                    &d,
                    size as u64,
                    &BTreeMap::new(),
                    (pre, post),
                    (pre, post),
                );
            }
        }
    });
}

/// `ResumeTruncate`: truncate to 0, rewrite everything, commit.
pub fn resume_truncate<S: Store>(factory: Factory<'_, S>) {
    check_resume("resume-truncate", factory, &|mut w, b, _, d| {
        w.truncate(0)?;
        for chunk in b.chunks(1024) {
            w.write_all(chunk).expect("write");
        }
        w.commit(b.len() as u64, Some(d), &BTreeMap::new())
            .map(|_| ())
    });
}

/// `ResumeDiscard`: write only the missing tail, commit.
pub fn resume_discard<S: Store>(factory: Factory<'_, S>) {
    check_resume("resume-discard", factory, &|mut w, b, written, d| {
        for chunk in b[written..].chunks(1024) {
            w.write_all(chunk).expect("write");
        }
        w.commit(b.len() as u64, Some(d), &BTreeMap::new())
            .map(|_| ())
    });
}

fn committed(c: Result<Copied>) -> Result<()> {
    match c? {
        Copied::Committed(_) => Ok(()),
        Copied::AlreadyExists(d) => panic!("{d} was not expected to exist yet"),
    }
}

/// A reader that is only `Read` (no seeking).
struct ReadOnly<R>(R);

impl<R: Read> Read for ReadOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// `ResumeCopy`: the copy helper skips the bytes already written by reading them.
pub fn resume_copy<S: Store>(factory: Factory<'_, S>) {
    check_resume("resume-copy", factory, &|w, b, _, d| {
        committed(super::copy(
            w,
            ReadOnly(b),
            Some(b.len() as u64),
            d,
            &BTreeMap::new(),
            &mut no_progress(),
        ))
    });
}

/// `ResumeCopySeeker`: the copy helper seeks past the bytes already written.
pub fn resume_copy_seeker<S: Store>(factory: Factory<'_, S>) {
    check_resume("resume-copy-seeker", factory, &|w, b, _, d| {
        committed(super::copy_seek(
            w,
            Cursor::new(b),
            Some(b.len() as u64),
            d,
            &BTreeMap::new(),
            &mut no_progress(),
        ))
    });
}

/// `ResumeCopyReaderAt`: the copy helper reads positionally from the offset.
pub fn resume_copy_reader_at<S: Store>(factory: Factory<'_, S>) {
    check_resume("resume-copy-reader-at", factory, &|w, b, _, d| {
        committed(super::copy_at(
            w,
            b,
            Some(b.len() as u64),
            d,
            &BTreeMap::new(),
            &mut no_progress(),
        ))
    });
}

/// `SmallBlob`: reading more than a small blob holds returns exactly the blob.
pub fn small_blob<S: Store>(factory: Factory<'_, S>) {
    with_store("small-blob", factory, |cs| {
        let blob = b"foobar";
        let d = Digest::sha256(blob);
        let mut w = cs
            .writer("small-blob", Some(&Expected::new(d.clone(), 6)))
            .unwrap();
        w.write_all(blob).unwrap();
        w.commit(6, Some(&d), &BTreeMap::new()).unwrap();
        assert_eq!(cs.info(&d).unwrap().size, 6);
        let mut buf = [0u8; 7];
        let n = cs.read_at(&d, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], blob);
        assert_eq!(
            cs.read_at(&d, 6, &mut buf).unwrap(),
            0,
            "nothing past the end"
        );
        assert_eq!(
            cs.read_at(&d, 100, &mut buf).unwrap(),
            0,
            "nothing far past the end"
        );
        let all = read_blob(cs, &d, 7);
        assert_eq!(Digest::sha256(&all), d);
        assert_eq!(all, blob);
    });
}

/// `Labels`: labels given at commit, replaced wholesale, and changed per key.
pub fn labels<S: Store>(factory: Factory<'_, S>) {
    with_store("labels", factory, |cs| {
        let (c1, d1) = create_content(256);
        let mut w = cs
            .writer("c1-checklabels", Some(&Expected::new(d1.clone(), 256)))
            .unwrap();
        w.write_all(&c1).unwrap();
        let root_time = "2026-11-26T01:02:03Z".to_owned();
        let mut labels = BTreeMap::from([
            ("k1".to_owned(), "v1".to_owned()),
            ("k2".to_owned(), "v2".to_owned()),
            (LABEL_GC_ROOT.to_owned(), root_time.clone()),
        ]);
        let pre_commit = SystemTime::now();
        w.commit(0, None, &labels).unwrap();
        let post_commit = SystemTime::now();
        let commit = (pre_commit, post_commit);
        check_info(cs, &d1, 256, &labels, commit, commit);

        labels.insert("k1".into(), "newvalue".into());
        labels.remove("k2");
        labels.insert("k3".into(), "v3".into());
        let mut info = cs.info(&d1).unwrap();
        info.labels = labels.clone();
        let pre = SystemTime::now();
        let updated = cs.update(&info, &[]).unwrap();
        let post = SystemTime::now();
        assert_eq!(updated.labels, labels);
        check_info(cs, &d1, 256, &labels, commit, (pre, post));

        info.labels = BTreeMap::from([
            ("k1".to_owned(), "v1".to_owned()),
            (LABEL_GC_ROOT.to_owned(), root_time),
        ]);
        let pre = SystemTime::now();
        cs.update(&info, &["labels.k3", "labels.k1"]).unwrap();
        let post = SystemTime::now();
        check_info(cs, &d1, 256, &info.labels, commit, (pre, post));

        let err = cs.update(&info, &["size"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let mut missing = info.clone();
        missing.digest = Digest::sha256(b"not stored");
        assert_eq!(
            cs.update(&missing, &[]).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    });
}

fn check_ref_not_available<S: Store>(cs: &S, r#ref: &str) {
    let err = cs
        .writer(r#ref, None)
        .expect_err("writer created with a ref in use");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// `CommitErrorState`: what a failed or refused commit leaves behind, step by step.
pub fn commit_error_state<S: Store>(factory: Factory<'_, S>) {
    with_store("commit-error-state", factory, |cs| {
        let (c1, d1) = create_content(256);
        let (_, d2) = create_content(256);
        write_blob(cs, "c1", &c1, &d1);
        let r = "c1-commiterror-state";
        let len = c1.len() as u64;
        let none = BTreeMap::new();
        let kind = |res: Result<Info>| res.map(|_| ()).unwrap_err().kind();

        let mut w = cs.writer(r, None).unwrap();
        w.write_all(&c1).unwrap();
        check_ref_not_available(cs, r);
        assert_eq!(
            kind(w.commit(len, Some(&d1), &none)),
            ErrorKind::AlreadyExists
        );

        let mut w = cs.writer(r, None).unwrap();
        check_ref_not_available(cs, r);
        w.write_all(&c1).unwrap();
        assert_eq!(kind(w.commit(len, None, &none)), ErrorKind::AlreadyExists);

        let mut w = cs.writer(r, None).unwrap();
        check_ref_not_available(cs, r);
        w.write_all(&c1).unwrap();
        w.write_all(b"more").unwrap();
        assert_eq!(
            kind(w.commit(len + 4, Some(&d2), &none)),
            ErrorKind::FailedPrecondition,
            "wrong digest"
        );

        let w = cs.writer(r, None).unwrap();
        check_ref_not_available(cs, r);
        assert_eq!(w.offset(), len + 4, "the failed ingest is kept");
        assert_eq!(
            kind(w.commit(len, None, &none)),
            ErrorKind::FailedPrecondition,
            "wrong size"
        );

        let w = cs.writer(r, None).unwrap();
        check_ref_not_available(cs, r);
        let info = w.commit(len + 4, None, &none).unwrap();
        assert_eq!(info.size, len + 4);

        let mut w = cs.writer(r, None).unwrap();
        assert_eq!(w.offset(), 0, "a committed ref starts afresh");
        w.write_all(&c1).unwrap();
        check_ref_not_available(cs, r);
        assert_eq!(
            kind(w.commit(len, Some(&d1), &none)),
            ErrorKind::AlreadyExists
        );

        let w = cs.writer(r, None).unwrap();
        check_ref_not_available(cs, r);
        drop(w);
        let w = cs.writer(r, None).unwrap();
        drop(w);
    });
}
