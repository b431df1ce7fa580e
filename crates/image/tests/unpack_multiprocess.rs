//! Two processes unpack the same image into the same root at the same time: both succeed,
//! each layer is applied once (the other process skips it), one chain results, and nothing
//! is left behind. The processes are this test binary re-executed with `child_unpack`; each
//! runs its layers in parallel, so the chain locks meet both across and within processes.
//!
//! And an unpack killed with SIGKILL mid-layer (`child_unpack` told to stall in its progress
//! callback): snapshot GC keeps its extraction while the process lives, removes it once the
//! process is dead, and a new unpack then completes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod unpack_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use berth_image::content::ContentStore;
use berth_image::progress::ProgressEvent;
use berth_image::unpack::{self, UnpackOptions, gc_snapshots};
use berth_snapshot::{Kind, OverlaySnapshotter};
use unpack_support::{Backend, Env, files_tar, privileged, store_image, store_layer};

const ROOT_ENV: &str = "BERTH_UNPACK_CHILD_ROOT";
const IMAGE_ENV: &str = "BERTH_UNPACK_CHILD_IMAGE";
/// When set, the child announces `CHILD-STALLED` and sleeps at the first partial layer report.
const STALL_ENV: &str = "BERTH_UNPACK_CHILD_STALL";

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
    let stall = std::env::var_os(STALL_ENV).is_some();
    let progress = |e: &ProgressEvent<'_>| {
        if stall && e.kind == "layer" && !e.finished && e.done > 0 {
            println!("CHILD-STALLED");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    };
    let mut opts = UnpackOptions::new("overlay");
    opts.progress = &progress;
    let report = unpack::unpack_image(&store, &sn, &image, &opts).unwrap();
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
    let spawn = || child_command(&env, &image).spawn().unwrap();
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

/// The command that runs `child_unpack` on `env`'s root and `image`.
fn child_command(env: &Env, image: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_unpack", "--nocapture", "--test-threads=1"])
        .env(ROOT_ENV, env.tmp.path())
        .env(IMAGE_ENV, image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Kills and reaps the child however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn gc_removes_the_extraction_of_a_killed_unpack() {
    if !privileged() {
        return;
    }
    let env = Env::new(Backend::Overlay);
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layer = store_layer(&env.store, &files_tar("big", &[("noise", &noise)]), false);
    let image = store_image(&env.store, "crash:unpack", &[layer]);

    let mut child = ChildGuard(
        child_command(&env, &image)
            .env(STALL_ENV, "1")
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let stalled = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("CHILD-STALLED"));
    assert!(stalled, "the child never reached the middle of its layer");
    let extracting = || -> Vec<String> {
        env.snapshots()
            .into_iter()
            .filter(|(name, kind, _)| *kind == Kind::Active && name.starts_with("extract-"))
            .map(|(name, _, _)| name)
            .collect()
    };
    assert_eq!(extracting().len(), 1, "{:?}", env.snapshots());

    // Alive: its chain lock is held, so the extraction is in progress and stays.
    let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
    assert!(r.abandoned.is_empty(), "{r:?}");
    assert_eq!(extracting().len(), 1);

    // Killed mid-layer: the extraction is abandoned and collected.
    let left = extracting();
    drop(child);
    let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
    assert_eq!(r.abandoned, left, "{r:?}");
    assert!(r.removed.is_empty(), "{r:?}");
    assert!(extracting().is_empty(), "{:?}", env.snapshots());

    // A new unpack does the layer and leaves nothing behind.
    let report = unpack::unpack_image(
        &env.store,
        env.sn.as_ref(),
        &image,
        &UnpackOptions::new("overlay"),
    )
    .unwrap();
    assert_eq!(report.applied(), 1);
    env.assert_clean();
}
