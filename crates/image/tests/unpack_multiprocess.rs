//! Two processes unpack the same image into the same root at the same time: both succeed,
//! each layer is applied once (the other process skips it), one chain results, and nothing
//! is left behind. The processes are this test binary re-executed with `child_unpack`; each
//! runs its layers in parallel, so the chain locks meet both across and within processes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod unpack_support;

use std::path::Path;
use std::process::Command;

use berth_image::content::ContentStore;
use berth_image::unpack::{self, UnpackOptions};
use berth_snapshot::OverlaySnapshotter;
use unpack_support::{Backend, Env, files_tar, privileged, store_image, store_layer};

const ROOT_ENV: &str = "BERTH_UNPACK_CHILD_ROOT";
const IMAGE_ENV: &str = "BERTH_UNPACK_CHILD_IMAGE";

/// The child side: does nothing unless started by `two_processes_one_chain`.
#[test]
fn child_unpack() {
    let (Some(root), Some(image)) = (std::env::var_os(ROOT_ENV), std::env::var(IMAGE_ENV).ok())
    else {
        return;
    };
    let root = Path::new(&root);
    let store = ContentStore::open(&root.join("content")).unwrap();
    let sn = OverlaySnapshotter::new(Env::sn_root_of(root, Backend::Overlay)).unwrap();
    let report = unpack::unpack_image(&store, &sn, &image, &UnpackOptions::new("overlay")).unwrap();
    println!("CHILD-APPLIED {}", report.applied());
    println!("CHILD-CHAIN {}", report.chain_id.unwrap());
}

#[test]
fn two_processes_one_chain() {
    if !privileged() {
        return;
    }
    let env = Env::new(Backend::Overlay);
    // Three plain-tar layers of a few MiB: long enough for the processes to overlap, quick
    // in debug builds (the Debian fixture's races are covered by the threads test).
    let layers: Vec<_> = (0..3)
        .map(|l| {
            let files: Vec<(String, Vec<u8>)> = (0..24)
                .map(|f| (format!("f{f}"), vec![(l * 31 + f) as u8; 150_000]))
                .collect();
            let refs: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(n, c)| (n.as_str(), c.as_slice()))
                .collect();
            store_layer(&env.store, &files_tar(&format!("layer{l}"), &refs), false)
        })
        .collect();
    let image = store_image(&env.store, "race:processes", &layers);
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args(["--exact", "child_unpack", "--nocapture", "--test-threads=1"])
            .env(ROOT_ENV, env.tmp.path())
            .env(IMAGE_ENV, &image)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn(), spawn()];
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut applied = 0;
    let mut chains = Vec::new();
    for o in &outputs {
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in stdout.lines() {
            // libtest prints "test child_unpack ... " before the child's own output.
            if let Some((_, n)) = line.split_once("CHILD-APPLIED ") {
                applied += n.trim().parse::<usize>().unwrap();
            }
            if let Some((_, c)) = line.split_once("CHILD-CHAIN ") {
                chains.push(c.trim().to_owned());
            }
        }
    }
    assert_eq!(chains.len(), 2, "both children reported");
    assert_eq!(chains[0], chains[1]);
    assert_eq!(
        applied, 3,
        "each of the 3 layers applied by exactly one process"
    );
    assert_eq!(env.committed().len(), 3);
    env.assert_clean();
}
