//! The `berth` command line, run as a user would: the built example binary
//! (`target/<profile>/examples/berth`, which `cargo test` builds before the tests) against a
//! temporary store root and the fixture images.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/berth_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>/examples/berth`, found from this test binary (`target/<profile>/deps/…`).
fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("berth");
    assert!(
        bin.is_file(),
        "{} is missing: run through `cargo test`, which builds the examples",
        bin.display()
    );
    bin
}

fn fixtures() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/fixtures"));
    if dir.join("busybox.oci.tar").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixtures missing at {} (required under CI)", dir.display());
    }
    eprintln!("skipping: fixtures missing at {}", dir.display());
    None
}

struct Cli {
    root: tempfile::TempDir,
    bin: PathBuf,
}

impl Cli {
    fn new() -> Self {
        Cli {
            root: tempfile::Builder::new()
                .prefix("berth-cli-test-")
                .tempdir()
                .unwrap(),
            bin: berth_bin(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "berth {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

const BUSYBOX: &str = "docker.io/anchors/busybox:latest";
const BUSYBOX_MANIFEST: &str =
    "sha256:fc9ccb2f83219abb8405e0f2fbe32cc78376cf9c53e3fbe483fd1ded71143710";

#[test]
fn import_ls_tag_export_rm_gc_verify() {
    let Some(fx) = fixtures() else { return };
    let cli = Cli::new();
    let archive = fx.join("busybox.oci.tar");
    let out = cli.ok(&["image", "import", archive.to_str().unwrap()]);
    assert!(
        out.contains(&format!("imported {BUSYBOX} {BUSYBOX_MANIFEST}")),
        "{out}"
    );
    // Idempotent.
    cli.ok(&["image", "import", "--quiet", archive.to_str().unwrap()]);

    let ls = cli.ok(&["image", "ls"]);
    let line = ls.lines().find(|l| l.starts_with(BUSYBOX)).unwrap();
    assert!(
        line.contains("manifest") && line.contains("linux/amd64"),
        "{ls}"
    );

    cli.ok(&["image", "tag", "anchors/busybox", "berth-test/copy:v1"]);
    let ls = cli.ok(&["image", "ls"]);
    assert!(ls.contains("docker.io/berth-test/copy:v1"), "{ls}");

    let content = cli.ok(&["content", "ls"]);
    assert_eq!(
        content.lines().filter(|l| l.starts_with("sha256:")).count(),
        3,
        "{content}"
    );
    assert!(content.contains(BUSYBOX_MANIFEST));

    let dest = cli.root.path().join("export.tar");
    cli.ok(&[
        "image",
        "export",
        "berth-test/copy:v1",
        dest.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    let dir = cli.root.path().join("export-dir");
    cli.ok(&["image", "export", BUSYBOX, dir.to_str().unwrap()]);
    assert!(dir.join("index.json").is_file());

    // Removing one name keeps the content the other name uses.
    let rm = cli.ok(&["image", "rm", BUSYBOX]);
    assert!(rm.contains(" 0 blobs"), "{rm}");
    let rm = cli.ok(&["image", "rm", "berth-test/copy:v1"]);
    assert!(rm.contains(" 3 blobs"), "{rm}");
    let content = cli.ok(&["content", "ls"]);
    assert_eq!(
        content.lines().filter(|l| l.starts_with("sha256:")).count(),
        0
    );

    // The exported archive imports back, named as exported.
    let out = cli.ok(&["image", "import", dest.to_str().unwrap()]);
    assert!(out.contains("docker.io/berth-test/copy:v1"), "{out}");
    let verify = cli.ok(&["content", "verify"]);
    assert!(
        verify.contains("3 blobs") && verify.contains("0 corrupt"),
        "{verify}"
    );
    let gc = cli.ok(&["content", "gc"]);
    assert!(gc.contains("kept 3 blobs"), "{gc}");
}

#[test]
fn import_options_and_errors() {
    let Some(fx) = fixtures() else { return };
    let cli = Cli::new();
    let docker = fx.join("busybox.docker.tar");
    let out = cli.ok(&[
        "image",
        "import",
        docker.to_str().unwrap(),
        "--name",
        "mine/bb:1",
    ]);
    assert!(out.contains("imported docker.io/mine/bb:1 "), "{out}");
    let err = cli.fails(&[
        "image",
        "import",
        docker.to_str().unwrap(),
        "--platform",
        "linux/arm64",
    ]);
    assert!(err.contains("no image for platform"), "{err}");
    let out = cli.ok(&[
        "image",
        "import",
        docker.to_str().unwrap(),
        "--all-platforms",
    ]);
    assert!(out.contains(BUSYBOX), "{out}");
    let err = cli.fails(&["image", "import", "/nonexistent/image.tar"]);
    assert!(err.contains("/nonexistent/image.tar"), "{err}");
    let err = cli.fails(&["image", "rm", "never/was:here"]);
    assert!(err.contains("not found"), "{err}");
    let err = cli.fails(&["image", "export", BUSYBOX, "/tmp/x", "--format", "zip"]);
    assert!(err.contains("oci-dir or oci-archive"), "{err}");
    // A blob whose bytes were changed behind the store's back is found by verify.
    let config = "950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6";
    let store_blob = cli.root.path().join("content/blobs/sha256").join(config);
    assert!(store_blob.is_file());
    std::fs::remove_file(&store_blob).unwrap();
    std::fs::write(&store_blob, b"tampered").unwrap();
    let out = cli.run(&["content", "verify"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("CORRUPT sha256:{config}")),
        "{stdout}"
    );
}

/// Committed snapshots listed by `berth snapshot ls`.
fn committed_snapshots(env: &support::Env) -> usize {
    env.ok(&["snapshot", "ls"])
        .lines()
        .filter(|l| l.trim_end().ends_with("Committed"))
        .count()
}

#[test]
fn image_rm_collects_unpacked_snapshots_no_container_needs() {
    if !support::prerequisites() {
        return;
    }
    // No container: removing the image removes its chain.
    let env = support::Env::new("image-rm");
    env.ok(&["image", "unpack", support::IMAGE]);
    let unpacked = committed_snapshots(&env);
    assert!(unpacked >= 1, "{}", env.ok(&["snapshot", "ls"]));
    let rm = env.ok(&["image", "rm", support::IMAGE]);
    assert!(
        rm.contains(&format!("removed {unpacked} snapshots")),
        "{rm}"
    );
    assert_eq!(committed_snapshots(&env), 0);

    // A container on the image keeps the chain under its snapshot until it is removed.
    let env = support::Env::new("image-rm-in-use");
    let id = env.run_detached(&[support::IMAGE, "sleep", "1000"]);
    let unpacked = committed_snapshots(&env);
    let rm = env.ok(&["image", "rm", support::IMAGE]);
    assert!(rm.contains("removed 0 snapshots"), "{rm}");
    assert_eq!(committed_snapshots(&env), unpacked);
    env.ok(&["rm", "-f", &id]);
    let gc = env.ok(&["snapshot", "gc"]);
    assert!(
        gc.contains(&format!("removed {unpacked} snapshots")),
        "{gc}"
    );
    env.assert_gone(&id);
}
