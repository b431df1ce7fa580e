//! A private podman for the berth-runc tests: its own storage root, run root and tmp dir in a
//! temp dir, the cgroupfs manager, file events, and berth-runc as its `--runtime`. Everything
//! it created (containers, mounts, its cgroup parents) is removed when the guard drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One private podman setup.
#[derive(Debug)]
pub struct Podman {
    /// The temp dir holding root, runroot and tmpdir.
    pub dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl Podman {
    /// A podman that runs containers with `runtime`.
    pub fn new(runtime: &Path) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("brc-pod-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Podman {
            dir,
            runtime: runtime.to_path_buf(),
        }
    }

    /// `podman <private globals> ARGS...`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["--storage-driver", "overlay"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args);
        c
    }

    /// Runs podman with null stdin, output through files.
    pub fn run(&self, args: &[&str]) -> Output {
        crate::runc_support::output_via_files(&mut self.cmd(args))
    }

    /// Runs podman and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The command line (for a shell under `script`).
    pub fn shell_words(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "podman --root {d}/root --runroot {d}/runroot --tmpdir {d}/tmp --cgroup-manager cgroupfs \
             --events-backend file --storage-driver overlay --runtime {}",
            self.runtime.display()
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        // Whatever containers/storage left mounted under our dir.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.path().to_string_lossy().into_owned();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        // podman's cgroupfs parents (removed only when empty: another podman may use them).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let parent = h.path().join("libpod_parent");
                let _ = std::fs::remove_dir(parent.join("conmon"));
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
