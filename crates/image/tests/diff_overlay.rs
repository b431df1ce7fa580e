//! Overlayfs in both directions, on real mounts (root only): a layer applied with overlay
//! whiteouts into an upper dir mounts as the same tree as the layer applied plainly; and the
//! diff of an upper dir written through a mount, applied onto the lower, reproduces the merged
//! view.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use apply_support::{TarBuilder, is_root, skip_or_fail, snapshot, tree_diff};
use berth_image::apply::{ApplyOptions, apply_layer};
use berth_image::diff::{DiffOptions, diff_overlay_upper};

/// An overlay mount, unmounted (lazily) on drop even when the test fails.
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Overlay {
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        rustix::mount::mount(
            "overlay",
            merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            std::ffi::CString::new(data).unwrap().as_c_str(),
        )
        .unwrap();
        Overlay {
            merged: merged.to_owned(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
    }
}

struct Dirs {
    tmp: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::Builder::new()
            .prefix("berth-diff-overlay-")
            .tempdir()
            .unwrap();
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Dirs { tmp }
    }
    fn p(&self, d: &str) -> PathBuf {
        self.tmp.path().join(d)
    }
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

fn lower_tree(lower: &Path) {
    std::fs::create_dir_all(lower.join("a")).unwrap();
    std::fs::create_dir_all(lower.join("d/sub")).unwrap();
    std::fs::write(lower.join("a/gone"), b"gone").unwrap();
    std::fs::write(lower.join("a/kept"), b"kept").unwrap();
    std::fs::write(lower.join("d/hidden"), b"hidden").unwrap();
    std::fs::write(lower.join("d/sub/deep"), b"deep").unwrap();
    std::fs::write(lower.join("edit"), b"before").unwrap();
}

#[test]
fn overlay_whiteouts_mount_as_the_plain_apply() {
    if !is_root() {
        return skip_or_fail("overlay mounts need root");
    }
    let dirs = Dirs::new();
    lower_tree(&dirs.p("lower"));
    let layer = TarBuilder::new()
        .dir("a", 0o755)
        .file("a/.wh.gone", b"", 0o644)
        .dir("d", 0o755)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/new", b"new", 0o644)
        .file("edit", b"after", 0o644)
        .file(".wh.missing-anyway", b"", 0o644)
        .finish();
    apply_layer(
        &dirs.p("upper"),
        &layer[..],
        ApplyOptions::default().with_overlay_whiteouts(true),
    )
    .unwrap();
    let plain = dirs.p("plain");
    cp_a(&dirs.p("lower"), &plain);
    apply_layer(&plain, &layer[..], ApplyOptions::default()).unwrap();

    let m = Overlay::mount(
        &dirs.p("lower"),
        &dirs.p("upper"),
        &dirs.p("work"),
        &dirs.p("merged"),
    );
    assert!(!m.merged.join("a/gone").exists());
    assert!(!m.merged.join("d/hidden").exists());
    assert!(!m.merged.join("d/sub").exists());
    assert_eq!(std::fs::read(m.merged.join("d/new")).unwrap(), b"new");
    let d = tree_diff(&snapshot(&plain, true), &snapshot(&m.merged, true));
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn overlay_upper_diff_round_trips() {
    if !is_root() {
        return skip_or_fail("overlay mounts need root");
    }
    let dirs = Dirs::new();
    lower_tree(&dirs.p("lower"));
    let merged_snapshot = {
        let m = Overlay::mount(
            &dirs.p("lower"),
            &dirs.p("upper"),
            &dirs.p("work"),
            &dirs.p("merged"),
        );
        let mp = &m.merged;
        std::fs::remove_file(mp.join("a/gone")).unwrap();
        std::fs::remove_dir_all(mp.join("d")).unwrap();
        std::fs::create_dir(mp.join("d")).unwrap();
        std::fs::write(mp.join("d/fresh"), b"fresh").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mp.join("edit"))
            .unwrap();
        f.write_all(b" and after").unwrap();
        drop(f);
        std::fs::create_dir_all(mp.join("new/dir")).unwrap();
        std::fs::write(mp.join("new/dir/file"), b"n").unwrap();
        std::os::unix::fs::symlink("../a/kept", mp.join("new/link")).unwrap();
        xattr::set(mp.join("a/kept"), "user.tag", b"v").unwrap();
        snapshot(mp, true)
    };
    let opts = DiffOptions::default();
    let (stats, layer) = diff_overlay_upper(&dirs.p("upper"), Vec::new(), &opts).unwrap();
    assert!(stats.entries >= 8);
    let names: Vec<String> = {
        let mut dec =
            berth_image::compression::Decompressor::new(&layer[..], None, "layer").unwrap();
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut dec, &mut tar).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        a.entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    };
    assert!(names.contains(&"a/.wh.gone".to_owned()), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("work")));

    let target = dirs.p("target");
    cp_a(&dirs.p("lower"), &target);
    let applied = apply_layer(&target, &layer[..], ApplyOptions::default()).unwrap();
    assert_eq!(applied.diff_id, stats.diff_id);
    let d = tree_diff(&merged_snapshot, &snapshot(&target, true));
    assert!(d.is_empty(), "{d:#?}");
}
