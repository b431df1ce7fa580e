//! Diff of two plain trees: round trip through apply, containerd's `TestDiffTar` entry checks,
//! determinism and the SOURCE_DATE_EPOCH-like mtime bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use apply_support::{is_root, snapshot, tree_diff};
use berth_image::apply::{ApplyOptions, apply_layer};
use berth_image::diff::{DiffOptions, diff_trees};
use berth_oci::{Compression, Digest};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-diff-test-")
        .tempdir()
        .unwrap()
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn write(p: &Path, data: &[u8], mode: u32) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Entries of a layer: (name, type byte, mode, mtime, link target).
fn entries(layer: &[u8]) -> Vec<(String, char, u32, u64, Option<String>)> {
    let mut dec = berth_image::compression::Decompressor::new(layer, None, "t").unwrap();
    let mut tar = Vec::new();
    dec.read_to_end(&mut tar).unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.entry_type().as_byte() as char,
                h.mode().unwrap(),
                h.mtime().unwrap(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            )
        })
        .collect()
}

fn names(layer: &[u8]) -> Vec<String> {
    entries(layer).into_iter().map(|e| e.0).collect()
}

fn diff(lower: &Path, upper: &Path, opts: &DiffOptions) -> Vec<u8> {
    let (stats, out) = diff_trees(lower, upper, Vec::new(), opts).unwrap();
    assert_eq!(stats.size, out.len() as u64);
    assert_eq!(stats.digest, Digest::sha256(&out));
    out
}

#[test]
fn round_trip_reproduces_upper() {
    let t = tmp();
    let lower = t.path().join("lower");
    write(&lower.join("etc/hosts"), b"127.0.0.1 localhost", 0o644);
    write(&lower.join("etc/profile"), b"export A=1", 0o644);
    write(&lower.join("etc/gone"), b"bye", 0o644);
    write(&lower.join("bin/tool"), b"\x7fELF", 0o755);
    write(&lower.join("lib/tree/deep/f"), b"deep", 0o644);
    write(&lower.join("becomes-dir"), b"file", 0o644);
    write(&lower.join("linked/a"), b"link me", 0o644);
    write(&lower.join("same"), b"unchanged", 0o644);
    std::fs::create_dir_all(lower.join("becomes-file/child")).unwrap();
    symlink("hosts", lower.join("etc/hosts.link")).unwrap();
    symlink("../../breakout", lower.join("etc/relative-breakout")).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);

    write(&upper.join("etc/hosts"), b"10.0.0.1 other", 0o644);
    std::fs::set_permissions(
        upper.join("etc/profile"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(upper.join("etc/gone")).unwrap();
    std::fs::remove_dir_all(upper.join("lib/tree")).unwrap();
    std::fs::remove_file(upper.join("becomes-dir")).unwrap();
    write(&upper.join("becomes-dir/inner"), b"inner", 0o640);
    std::fs::remove_dir_all(upper.join("becomes-file")).unwrap();
    write(&upper.join("becomes-file"), b"now a file", 0o644);
    std::fs::hard_link(upper.join("linked/a"), upper.join("linked/b")).unwrap();
    std::fs::remove_file(upper.join("etc/hosts.link")).unwrap();
    symlink("/etc/profile", upper.join("etc/hosts.link")).unwrap();
    write(&upper.join("new/dir/file"), b"new", 0o4755);
    xattr::set(upper.join("bin/tool"), "user.origin", b"test").unwrap();
    if is_root() {
        std::os::unix::fs::lchown(upper.join("bin/tool"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::lchown(upper.join("etc/hosts.link"), Some(7), Some(8)).unwrap();
        // CAP_NET_BIND_SERVICE, permitted + effective (vfs cap v2).
        let cap = [
            0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        xattr::set(upper.join("bin/tool"), "security.capability", &cap).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    }

    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = DiffOptions {
            compression: c,
            ..DiffOptions::default()
        };
        let (stats, layer) = diff_trees(&lower, &upper, Vec::new(), &opts).unwrap();
        assert!(stats.entries > 0);
        let target = t.path().join(format!("target-{c:?}"));
        cp_a(&lower, &target);
        let applied = apply_layer(
            &target,
            &layer[..],
            ApplyOptions::default()
                .with_compression(c)
                .with_expected_diff_id(stats.diff_id.clone()),
        )
        .unwrap();
        assert_eq!(applied.diff_id, stats.diff_id);
        assert_eq!(applied.uncompressed_size, stats.uncompressed_size);
        let d = tree_diff(&snapshot(&upper, true), &snapshot(&target, true));
        assert!(d.is_empty(), "{c:?}: {d:#?}");
        let n = names(&layer);
        assert!(
            !n.iter().any(|p| p == "same"),
            "unchanged files are not in the layer"
        );
        assert!(n.iter().any(|p| p == "etc/.wh.gone"));
        assert!(n.iter().any(|p| p == "lib/.wh.tree"));
        assert!(!n.iter().any(|p| p.starts_with("lib/tree/")));
    }
}

#[test]
fn relative_symlinks_survive_unchanged() {
    let t = tmp();
    let lower = t.path().join("lower");
    std::fs::create_dir_all(lower.join("home/derek")).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    for (target, name) in [
        ("../../../breakout", "home/derek/breakout"),
        ("etc/../../upandout", "breakout"),
        ("/etc", "localetc"),
    ] {
        symlink(target, upper.join(name)).unwrap();
    }
    let layer = diff(&lower, &upper, &DiffOptions::default());
    let target = t.path().join("target");
    cp_a(&lower, &target);
    apply_layer(&target, &layer[..], ApplyOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_link(target.join("home/derek/breakout"))
            .unwrap()
            .to_str(),
        Some("../../../breakout")
    );
    assert_eq!(
        std::fs::read_link(target.join("breakout"))
            .unwrap()
            .to_str(),
        Some("etc/../../upandout")
    );
    assert!(tree_diff(&snapshot(&upper, true), &snapshot(&target, true)).is_empty());
}

#[test]
fn empty_diff_has_no_entries() {
    let t = tmp();
    let lower = t.path().join("lower");
    std::fs::create_dir_all(lower.join("etc")).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    let layer = diff(&lower, &upper, &DiffOptions::default());
    assert!(names(&layer).is_empty());
}

#[test]
fn parents_of_changes_are_included() {
    let t = tmp();
    let lower = t.path().join("lower");
    std::fs::create_dir_all(lower.join("d1")).unwrap();
    std::fs::create_dir_all(lower.join("d2")).unwrap();
    std::fs::set_permissions(lower.join("d2"), std::fs::Permissions::from_mode(0o770)).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    std::fs::create_dir(upper.join("d1/d")).unwrap();
    std::fs::set_permissions(upper.join("d1/d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&upper.join("d2/f"), b"ok", 0o644);
    let e = entries(&diff(&lower, &upper, &DiffOptions::default()));
    let got: Vec<(String, u32)> = e.iter().map(|e| (e.0.clone(), e.2)).collect();
    assert_eq!(
        got,
        [
            ("d1/".to_owned(), 0o755),
            ("d1/d/".to_owned(), 0o700),
            ("d2/".to_owned(), 0o770),
            ("d2/f".to_owned(), 0o644)
        ]
    );
}

#[test]
fn whiteouts_include_parents_and_remove_only_the_top() {
    let t = tmp();
    let lower = t.path().join("lower");
    for d in ["d1", "d2", "d3", "d5"] {
        write(&lower.join(d).join("f1"), b"content", 0o644);
    }
    write(&lower.join("d5/sub/f"), b"content", 0o644);
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    std::fs::remove_file(upper.join("d1/f1")).unwrap();
    std::fs::remove_file(upper.join("d2/f1")).unwrap();
    write(&upper.join("d2/f2"), b"content", 0o777);
    std::fs::remove_file(upper.join("d3/f1")).unwrap();
    std::fs::remove_dir_all(upper.join("d5")).unwrap();
    let e = entries(&diff(&lower, &upper, &DiffOptions::default()));
    let got: Vec<&str> = e.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        got,
        [
            "d1/",
            "d1/.wh.f1",
            "d2/",
            "d2/.wh.f1",
            "d2/f2",
            "d3/",
            "d3/.wh.f1",
            ".wh.d5"
        ]
    );
    for w in e.iter().filter(|e| e.0.contains(".wh.")) {
        assert_eq!(
            (w.1, w.3),
            ('0', 0),
            "whiteouts are regular files with mtime 0"
        );
    }
}

#[test]
fn new_hardlinks_bring_their_group() {
    let t = tmp();
    let lower = t.path().join("lower");
    write(&lower.join("d1/f1"), b"link me", 0o644);
    std::fs::create_dir(lower.join("d2")).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    std::fs::hard_link(upper.join("d1/f1"), upper.join("d2/l1")).unwrap();
    let e = entries(&diff(&lower, &upper, &DiffOptions::default()));
    let got: Vec<(String, char, Option<String>)> = e.into_iter().map(|e| (e.0, e.1, e.4)).collect();
    assert_eq!(
        got,
        [
            ("d1/".to_owned(), '5', None),
            ("d1/f1".to_owned(), '0', None),
            ("d2/".to_owned(), '5', None),
            ("d2/l1".to_owned(), '1', Some("d1/f1".to_owned())),
        ]
    );
}

#[test]
fn sockets_are_skipped() {
    let t = tmp();
    let lower = t.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    write(&upper.join("f2"), b"content", 0o644);
    let _sock = std::os::unix::net::UnixListener::bind(upper.join("s0")).unwrap();
    write(&upper.join("f3"), b"content", 0o644);
    assert_eq!(
        names(&diff(&lower, &upper, &DiffOptions::default())),
        ["f2", "f3"]
    );
}

#[test]
fn output_is_deterministic_and_mtimes_are_bounded() {
    let t = tmp();
    let lower = t.path().join("lower");
    write(&lower.join("gone"), b"x", 0o644);
    let upper = t.path().join("upper");
    cp_a(&lower, &upper);
    std::fs::remove_file(upper.join("gone")).unwrap();
    let epoch: i64 = 1_642_941_296; // 2022-01-23T12:34:56Z
    let past: i64 = 1_640_995_200; // 2022-01-01
    write(&upper.join("old"), b"old", 0o644);
    write(&upper.join("recent"), b"recent", 0o644);
    let set = |p: &Path, secs: i64| {
        let ft = filetime::FileTime::from_unix_time(secs, 123);
        filetime::set_symlink_file_times(p, ft, ft).unwrap();
    };
    set(&upper.join("old"), past);
    set(&upper.join("recent"), epoch + 86_400);
    let opts = DiffOptions {
        mtime_upper_bound: Some(epoch),
        ..DiffOptions::default()
    };
    let a = diff(&lower, &upper, &opts);
    let b = diff(&lower, &upper, &opts);
    assert_eq!(a, b, "same trees, same bytes");
    let e = entries(&a);
    let mtime = |n: &str| e.iter().find(|x| x.0 == n).unwrap().3;
    assert_eq!(mtime(".wh.gone"), 0);
    assert_eq!(mtime("old"), past as u64);
    assert_eq!(mtime("recent"), epoch as u64);
    // Applied, the clamped file carries the bound exactly (no stray nanoseconds).
    let target = t.path().join("target");
    cp_a(&lower, &target);
    apply_layer(&target, &a[..], ApplyOptions::default()).unwrap();
    let m = std::fs::metadata(target.join("recent")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (epoch, 0));
    let m = std::fs::metadata(target.join("old")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (past, 123));
}
