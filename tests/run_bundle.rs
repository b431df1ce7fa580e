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

use runc_support::{StateRoot, have_busybox, have_root, have_tool, unavailable, unique};

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

/// The static `dist` build of run-bundle (`scripts/build-dist.sh run-bundle`, which
/// `scripts/test.sh` runs before the tests): `<target>/<triple>/dist/examples/run-bundle`.
fn dist_run_bundle_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/<test> → <target>
    let target = exe.ancestors().nth(3).unwrap();
    let found = std::fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().path().join("dist/examples/run-bundle"))
        .find(|p| p.is_file());
    if found.is_none() {
        unavailable(&format!(
            "no dist build of run-bundle under {} (run scripts/build-dist.sh run-bundle)",
            target.display()
        ));
    }
    found
}

/// The ELF program header types of `bin` (64-bit little-endian), and its `e_type`.
fn elf_layout(bin: &Path) -> (u16, Vec<u32>) {
    let b = std::fs::read(bin).unwrap();
    assert_eq!(
        &b[..6],
        b"\x7fELF\x02\x01",
        "{} is not a 64-bit LE ELF",
        bin.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let e_type = u16_at(16);
    let phoff = usize::try_from(u64::from_le_bytes(b[32..40].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    let types = (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
        })
        .collect();
    (e_type, types)
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

/// The shipping build (static-pie, static libseccomp, RELR) is self-contained and runs
/// containers as the ordinary build does, seccomp included.
#[test]
fn the_static_dist_build_runs_a_bundle_with_seccomp() {
    if !(have_root() && have_busybox() && have_tool("runc")) {
        return;
    }
    let Some(bin) = dist_run_bundle_bin() else {
        return;
    };
    // Position-independent (ET_DYN, so ASLR applies) and without an interpreter: the kernel
    // runs it directly, no ld.so and no shared library is involved.
    const ET_DYN: u16 = 3;
    const PT_INTERP: u32 = 3;
    let (e_type, phdrs) = elf_layout(&bin);
    assert_eq!(
        e_type,
        ET_DYN,
        "{} is not position-independent",
        bin.display()
    );
    assert!(
        !phdrs.contains(&PT_INTERP),
        "{} asks for a dynamic loader",
        bin.display()
    );

    let dir = tempfile::Builder::new()
        .prefix("berth-run-bundle-dist-")
        .tempdir()
        .unwrap();
    runc_spec_bundle(
        dir.path(),
        &["sh", "-c", "busybox mkdir /tmp/d 2>&1 || true; echo pid-$$"],
    );
    // A seccomp profile (the statically linked libseccomp builds it): mkdir fails with EPERM.
    let path = dir.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"]["readonly"] = false.into(); // only the filter can refuse the mkdir
    spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let root = StateRoot::new();
    let id = unique("run-bundle-dist");
    let out = Command::new(&bin)
        .arg("--root")
        .arg(root.path())
        .args(["--id", &id])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Refused by the filter (EPERM, not the EROFS of a read-only root), and the shell is
    // pid 1 of its own pid namespace.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Operation not permitted") && stdout.ends_with("\npid-1\n"),
        "{stdout}"
    );
    assert!(!dir.path().join("rootfs/tmp/d").exists());
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "state left: {left:?}");
}
