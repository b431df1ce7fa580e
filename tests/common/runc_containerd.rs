//! A private containerd for the berth-runc tests: its own root, state, sockets and config in a
//! temp dir, CRI and the snapshotters it cannot use disabled, killed (with everything it ran)
//! when the guard drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    /// The temp dir holding config, root, state and sockets.
    pub dir: tempfile::TempDir,
    /// The namespace the test uses (unique, so the shim's runc root is unique too).
    pub namespace: String,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd and waits until it answers (10 s at most).
    pub fn start(namespace: &str) -> Containerd {
        // Short path: unix socket paths must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("brc-ctd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let c = Containerd {
            dir,
            namespace: namespace.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if c.socket().exists() && c.ctr(&["version"]).status.success() {
                break;
            }
            if Instant::now() > deadline {
                panic!("containerd did not come up:\n{}", c.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n NS ARGS...` with null stdin, output through files (a task's stdio
    /// copies must not keep a pipe open).
    pub fn ctr(&self, args: &[&str]) -> Output {
        crate::runc_support::output_via_files(
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", &self.namespace])
                .args(args),
        )
    }

    /// Runs ctr and asserts success; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}\n--- containerd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The runc root containerd's shim uses for this namespace (its default root).
    pub fn shim_runc_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.namespace)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first (their shims and mounts), then containers, then the daemon.
        let tasks = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", "--all", id]);
            let _ = self.ctr(&["task", "rm", "-f", id]);
        }
        let containers = self.ctr(&["containers", "ls", "-q"]);
        for id in String::from_utf8_lossy(&containers.stdout).lines() {
            let _ = self.ctr(&["containers", "rm", id]);
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Anything containerd left mounted under its root (snapshots of killed tasks).
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
        let _ = std::fs::remove_dir(self.shim_runc_root());
        // containerd puts a task's cgroup at /<namespace>/<id>; the runtime removes the leaf,
        // the namespace level is ours to remove (it is unique to this test).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.namespace));
            }
        }
    }
}
