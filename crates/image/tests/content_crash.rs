//! Crash safety: a child process is killed with SIGKILL in the middle of an ingest (at fixed
//! offsets, and at random moments while it writes and commits); the store is then reopened,
//! re-hashed, and the ref either resumes to a correct commit or aborts cleanly.
//!
//! The child is this test binary re-executed with `BERTH_CRASH_CHILD` set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_image::ErrorKind;
use berth_image::content::{ContentStore, Expected};
use berth_oci::Digest;

const CHILD_ENV: &str = "BERTH_CRASH_CHILD";

/// Deterministic content shared by parent and child.
fn content(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut b = Vec::with_capacity(size + 8);
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(size);
    b
}

/// Kills and reaps the child however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "berth-content-crash-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The child's side: write `size` bytes of `seed` content under `ref`, stopping at `stop`
/// (then announce and wait to be killed), or running to commit when `stop` is `free`.
fn child_main(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [root, r#ref, seed, size, stop] = parts.as_slice() else {
        panic!("bad child spec {spec}");
    };
    let size: usize = size.parse().unwrap();
    let data = content(seed.parse().unwrap(), size);
    let d = Digest::sha256(&data);
    let store = ContentStore::open(Path::new(root)).unwrap();
    let mut w = store
        .writer(r#ref, Some(&Expected::new(d.clone(), size as u64)))
        .unwrap();
    let start = w.offset() as usize;
    let mut out = std::io::stdout();
    if *stop == "free" {
        writeln!(out, "BERTH-READY").unwrap();
        out.flush().unwrap();
        for chunk in data[start..].chunks(16 * 1024) {
            w.write_all(chunk).unwrap();
        }
        w.commit(size as u64, Some(&d), &BTreeMap::new()).unwrap();
        writeln!(out, "BERTH-COMMITTED").unwrap();
    } else {
        let stop: usize = stop.parse().unwrap();
        for chunk in data[start..stop].chunks(4096) {
            w.write_all(chunk).unwrap();
        }
        writeln!(out, "BERTH-READY").unwrap();
    }
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

fn spawn_child(spec: &str) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sigkill_mid_ingest",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (ChildGuard(child), stdout)
}

fn wait_ready(out: &mut BufReader<std::process::ChildStdout>) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before it was ready");
        if line.trim_end().ends_with("BERTH-READY") {
            return;
        }
    }
}

fn kill_9(mut guard: ChildGuard) {
    // `Child::kill` sends SIGKILL on Unix.
    guard.0.kill().unwrap();
    let status = guard.0.wait().unwrap();
    assert!(!status.success(), "child should have died of SIGKILL");
}

/// After a crash: nothing corrupt, the ingest is consistent, and it resumes (or aborts).
fn check_after_crash(
    root: &Path,
    r#ref: &str,
    data: &[u8],
    expect_offset: Option<u64>,
    resume: bool,
) {
    let store = ContentStore::open(root).unwrap();
    let report = store.verify().unwrap();
    assert!(
        report.is_ok(),
        "corrupt blobs after crash: {:?}",
        report.corrupt
    );
    let d = Digest::sha256(data);
    let committed = store.exists(&d);
    match store.status(r#ref) {
        Ok(st) => {
            assert!(
                !committed || st.offset == 0,
                "both blob and a partial ingest"
            );
            if let Some(off) = expect_offset {
                assert_eq!(st.offset, off, "offset after crash");
            }
            assert!(st.offset <= data.len() as u64);
            assert_eq!(st.total, Some(data.len() as u64));
            assert_eq!(st.expected.as_ref(), Some(&d));
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(
                committed || expect_offset.is_none(),
                "ingest vanished without a commit"
            );
        }
    }
    if resume {
        let mut seen_offset = None;
        let info = store
            .ingest(
                r#ref,
                data,
                &d,
                Some(data.len() as u64),
                &BTreeMap::new(),
                &mut |done, _| {
                    seen_offset.get_or_insert(done);
                },
            )
            .unwrap();
        assert_eq!(info.digest, d);
        assert_eq!(info.size, data.len() as u64);
        if let (Some(off), false) = (expect_offset, committed) {
            assert_eq!(
                seen_offset,
                Some(off),
                "the copy resumed at the crash offset"
            );
        }
        assert_eq!(store.read_all(&d, u64::MAX).unwrap(), data);
        assert_eq!(store.status(r#ref).unwrap_err().kind(), ErrorKind::NotFound);
    } else if !committed {
        store.abort(r#ref).unwrap();
        assert_eq!(store.status(r#ref).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(!store.exists(&d));
        assert!(store.list_statuses(None).unwrap().is_empty());
        // A fresh writer starts at zero.
        assert_eq!(store.writer(r#ref, None).unwrap().offset(), 0);
    }
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn sigkill_mid_ingest() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let size = 1024 * 1024 + 123;
    // Killed at fixed offsets: before the first byte, after one byte, mid-block, at the end
    // (before commit). Odd cases resume, even ones abort.
    for (i, stop) in [0usize, 1, 4096 + 7, size / 2, size]
        .into_iter()
        .enumerate()
    {
        let tmp = TempRoot::new("fixed");
        let seed = 100 + i as u64;
        let data = content(seed, size);
        let r#ref = format!("crash-{i}");
        let spec = format!("{}|{ref}|{seed}|{size}|{stop}", tmp.0.display());
        let (guard, mut out) = spawn_child(&spec);
        wait_ready(&mut out);
        kill_9(guard);
        let resume = i % 2 == 1 || stop == size;
        check_after_crash(&tmp.0, &r#ref, &data, Some(stop as u64), resume);
    }
    // Killed at random moments while writing or committing, twice on the same ref, then resumed.
    let size = 6 * 1024 * 1024;
    for round in 0..3u64 {
        let tmp = TempRoot::new("free");
        let seed = 200 + round;
        let data = content(seed, size);
        let spec = format!("{}|free-ref|{seed}|{size}|free", tmp.0.display());
        for kill in 0..2 {
            let (guard, mut out) = spawn_child(&spec);
            wait_ready(&mut out);
            std::thread::sleep(Duration::from_millis(
                rand_suffix() % (4 + 6 * round + kill),
            ));
            kill_9(guard);
            let store = ContentStore::open(&tmp.0).unwrap();
            assert!(store.verify().unwrap().is_ok());
        }
        check_after_crash(&tmp.0, "free-ref", &data, None, true);
    }
}

/// A resume of a crashed ingest whose data ends in garbage (bytes that do not match the
/// source) fails verification, and the helper aborts it so the rerun starts clean and succeeds.
#[test]
fn resumed_garbage_is_detected_and_rerun_succeeds() {
    let tmp = TempRoot::new("garbage");
    let data = content(7, 100_000);
    let d = Digest::sha256(&data);
    let store = ContentStore::open(&tmp.0).unwrap();
    let mut w = store
        .writer("g", Some(&Expected::new(d.clone(), data.len() as u64)))
        .unwrap();
    w.write_all(&[0u8; 5000]).unwrap();
    drop(w);
    let none = BTreeMap::new();
    let err = store
        .ingest(
            "g",
            &data[..],
            &d,
            Some(data.len() as u64),
            &none,
            &mut |_, _| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(store.status("g").unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!store.exists(&d));
    let info = store
        .ingest(
            "g",
            &data[..],
            &d,
            Some(data.len() as u64),
            &none,
            &mut |_, _| {},
        )
        .unwrap();
    assert_eq!(info.digest, d);
    assert!(store.verify().unwrap().is_ok());
}
