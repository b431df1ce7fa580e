//! Differential test of reference normalisation against skopeo (containers/image, which uses
//! the distribution `reference` package): skopeo writes a docker-archive under each name, and
//! the `RepoTags` it records must equal berth's normalised form; names skopeo refuses, berth
//! refuses too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_oci::Reference;
use berth_oci::docker_archive::parse_manifest_json;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/busybox-oci")
}

/// Whether the test can run; in CI a missing tool or fixture fails loudly.
fn prerequisites() -> bool {
    let skopeo = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let fixture_ok = fixture().join("index.json").is_file();
    if skopeo && fixture_ok {
        return true;
    }
    let why = if skopeo {
        "the busybox-oci fixture is missing"
    } else {
        "skopeo is not installed"
    };
    if std::env::var_os("CI").is_some() {
        panic!("{why} (required in CI)");
    }
    eprintln!("skipping: {why}");
    false
}

/// A scratch directory removed on drop, unique per process and call.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-oci-refs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The RepoTags skopeo records for `name`, or `None` if skopeo refuses the name.
fn skopeo_repo_tags(dir: &Path, name: &str) -> Option<Vec<String>> {
    let archive = dir.join("a.tar");
    let _ = std::fs::remove_file(&archive);
    let status = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:latest", fixture().display()))
        .arg(format!("docker-archive:{}:{name}", archive.display()))
        .output()
        .unwrap();
    if !status.status.success() {
        return None;
    }
    let manifest = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("manifest.json")
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let entries = parse_manifest_json(&manifest.stdout).unwrap();
    Some(entries[0].repo_tags.clone())
}

#[test]
fn normalisation_matches_skopeo() {
    if !prerequisites() {
        return;
    }
    let scratch = Scratch::new();
    let accepted = [
        "busybox",
        "busybox:1.36",
        "library/busybox",
        "docker.io/busybox",
        "index.docker.io/library/busybox:1",
        "user/repo",
        "user/repo/sub:t",
        "registry:5000/repo:tag",
        "registry:5000/repo",
        "localhost/app",
        "localhost:5000/a/b:v1.0",
        "quay.io/org/app_x.y-z__w",
        "My.Registry.io/repo",
        "a-b.c/d---e",
    ];
    for name in accepted {
        let ours = Reference::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs =
            skopeo_repo_tags(&scratch.0, name).unwrap_or_else(|| panic!("skopeo refused {name}"));
        assert_eq!(theirs, vec![ours.to_string()], "{name}");
        // And berth reads skopeo's form back to the same reference.
        assert_eq!(Reference::parse(&theirs[0]).unwrap(), ours, "{name}");
    }
    let refused = [
        "Busybox",
        "foo/Bar",
        "repo:-x",
        "a//b",
        "repo_",
        "-reg.io/repo",
        "re...po",
    ];
    for name in refused {
        assert!(Reference::parse(name).is_err(), "berth accepted {name}");
        assert!(
            skopeo_repo_tags(&scratch.0, name).is_none(),
            "skopeo accepted {name}"
        );
    }
}
