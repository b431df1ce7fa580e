//! The README demo (`examples/demo.rs`, which `scripts/demo.sh` runs): run the built example
//! and check what it reports, and that it leaves nothing behind. Needs root (skips with a
//! reason outside CI, fails under CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/berth_support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn demo_builds_runs_measures_and_cleans_up() {
    if !support::prerequisites() {
        return;
    }
    let out = Command::new(support::example_bin("demo"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", support::describe(&out));
    for expected in [
        "imported docker.io/berth-demo/busybox:latest -> sha256:",
        "[6] unpack docker.io/berth-demo/busybox:latest",
        "    container says: hello from berth\n",
        "    exited with status 0\n",
        "    memory limit      64.0 MiB\n",
        "(limit 32)\n",
        "    cpu usage         ",
        "removed container ",
        "content verify: 3 blobs",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The temporary root is gone, with no mount or cgroup of the container left.
    let work = text
        .lines()
        .find_map(|l| l.strip_prefix("berth demo in "))
        .unwrap();
    assert!(!Path::new(work).exists(), "{work} left behind");
    assert!(support::mounts_under(Path::new(work)).is_empty());
    let id = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("container ")
                .and_then(|r| r.split(':').next())
        })
        .unwrap();
    assert_eq!(id.len(), 32, "{id}");
    assert!(!Path::new("/sys/fs/cgroup/memory/berth").join(id).exists());
    assert!(!Path::new("/sys/fs/cgroup/pids/berth").join(id).exists());
}
