//! `examples/run-bundle.rs`, the smallest front end of the runtime library, on a bundle made by
//! `runc spec` (whose default lists ambient capabilities without inheritable ones: they are
//! left out, as runc does, instead of failing the container). Needs root, busybox and runc
//! (skipped with a reason outside CI, a failure under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/runc_support.rs"]
mod runc_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use runc_support::{StateRoot, have_busybox, have_root, have_tool, unique};

fn run_bundle_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join("run-bundle");
    assert!(bin.is_file(), "{} not built", bin.display());
    bin
}

/// A busybox bundle with `runc spec`'s config, running `args`.
fn runc_spec_bundle(dir: &Path, args: &[&str]) {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        spec["process"]["capabilities"]["ambient"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            && spec["process"]["capabilities"]["inheritable"].is_null(),
        "runc spec's default changed: {}",
        spec["process"]["capabilities"]
    );
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

#[test]
fn runs_a_runc_spec_bundle_and_returns_its_exit_code() {
    if !(have_root() && have_busybox() && have_tool("runc")) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-run-bundle-")
        .tempdir()
        .unwrap();
    runc_spec_bundle(dir.path(), &["sh", "-c", "echo out-$((1+2)); exit 3"]);
    // StateRoot force-deletes whatever a failed run leaves, through berth-runc.
    let root = StateRoot::new();
    let id = unique("run-bundle");
    let out = Command::new(run_bundle_bin())
        .arg("--root")
        .arg(root.path())
        .args(["--id", &id, "--repeat", "2"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-3\nout-3\n");
    // Both rounds deleted their containers.
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "state left: {left:?}");
}

#[test]
fn a_missing_bundle_is_a_clear_error() {
    let root = tempfile::Builder::new()
        .prefix("berth-run-bundle-root-")
        .tempdir()
        .unwrap();
    let out = Command::new(run_bundle_bin())
        .arg("--root")
        .arg(root.path())
        .arg("/nonexistent/bundle")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
}
