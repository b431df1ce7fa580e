//! Shared helpers of the berth-runc tests: the built binary, privilege and tool checks that
//! skip outside CI and fail inside it, unique names, busybox bundles, and guards that leave no
//! container, state root or temp dir behind.
//!
//! The tests do not make themselves child subreapers: reaping with `waitpid(-1)` would race the
//! `Command` waits of tests running in parallel threads. Container inits left by `create` are
//! reparented to pid 1; berth-runc reads their status from /proc (a zombie counts as stopped).

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether we run under CI (then a missing privilege, tool or fixture is a failure).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Reports a missing prerequisite: panics under CI, otherwise prints why the test is skipped.
/// Returns `false` so callers can write `if !prerequisite(..) { return; }`.
pub fn unavailable(reason: &str) -> bool {
    if in_ci() {
        panic!("required for this test under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// Root is needed for namespaces, mounts and cgroups.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        unavailable("running as root")
    }
}

/// A program on PATH.
pub fn have_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if found {
        true
    } else {
        unavailable(&format!("`{name}` on PATH"))
    }
}

/// The host's static busybox (package busybox-static).
pub fn have_busybox() -> bool {
    if Path::new("/bin/busybox").is_file() {
        true
    } else {
        unavailable("/bin/busybox (busybox-static)")
    }
}

/// The built `berth-runc` example next to this test binary (`target/<profile>/examples/`).
pub fn berth_runc() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("examples").join("berth-runc");
    assert!(
        bin.is_file(),
        "{} not built (cargo test builds examples)",
        bin.display()
    );
    bin
}

/// The shared fixtures directory (`../shared/fixtures` from the repository root).
pub fn fixture(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    if path.is_file() {
        Some(path)
    } else {
        unavailable(&format!("fixture {}", path.display()));
        None
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or parallel run) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A state root of its own, whose containers are force-deleted on drop.
#[derive(Debug)]
pub struct StateRoot {
    /// The temp dir holding the root.
    pub dir: tempfile::TempDir,
    /// The berth-runc binary.
    pub bin: PathBuf,
}

impl StateRoot {
    /// A fresh root under /tmp.
    pub fn new() -> StateRoot {
        let dir = tempfile::Builder::new()
            .prefix("berth-runc-root-")
            .tempdir()
            .expect("tempdir");
        StateRoot {
            dir,
            bin: berth_runc(),
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `berth-runc --root ROOT ARGS...`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.path()).args(args);
        c
    }

    /// Runs `berth-runc --root ROOT ARGS...` with null stdin and captured output.
    ///
    /// The output goes through files, not pipes: a container created (or a process exec'd
    /// detached) keeps its copies of stdout/stderr open, and a pipe would never reach EOF.
    pub fn run(&self, args: &[&str]) -> Output {
        use std::io::{Read, Seek};
        let mut out = tempfile::tempfile().expect("stdout file");
        let mut err = tempfile::tempfile().expect("stderr file");
        let status = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .status()
            .expect("spawn berth-runc");
        let read = |f: &mut std::fs::File| {
            let mut buf = Vec::new();
            f.rewind().expect("rewind");
            f.read_to_end(&mut buf).expect("read output");
            buf
        };
        Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth-runc {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `state ID` as JSON.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    /// Polls `state ID` until its status is `want` (or panics after 10 s).
    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.state(id);
            if st["status"] == want {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became {want}: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StateRoot {
    fn drop(&mut self) {
        let ids = self.run(&["list", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.run(&["delete", "--force", id]);
        }
    }
}

/// Whether berth-runtime's devices cgroup keeps the default devices (/dev/null, zero, full,
/// random, urandom, tty, ptmx, pts) usable whatever the spec's rules, as runc does. It does: the
/// spec's rules (usually a leading deny-all) are written first and the default allowances after
/// them, so bundles keep their `linux.resources`. Setting this to `false` would bring back the
/// old workaround of dropping that section from the test bundles.
pub const LIBRARY_ALLOWS_DEFAULT_DEVICES: bool = true;

/// A busybox bundle in a temp dir: `rootfs/` from /bin/busybox and `config.json` from
/// `berth-runc spec`, edited by the caller.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle running `args` (no terminal unless `terminal`), from berth-runc's default spec
    /// with a writable root.
    pub fn busybox(args: &[&str], terminal: bool) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-runc-bundle-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "echo", "true", "false", "sleep", "cat", "ls", "ps", "id", "tty", "env", "pwd",
            "hostname", "stty", "kill", "wc", "grep",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
            .expect("passwd");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
        let out = Command::new(berth_runc())
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .expect("berth-runc spec");
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bundle = Bundle { dir };
        bundle.edit(|c| {
            c["process"]["args"] = serde_json::json!(args);
            c["process"]["terminal"] = serde_json::json!(terminal);
            c["root"]["readonly"] = serde_json::json!(false);
            if !LIBRARY_ALLOWS_DEFAULT_DEVICES && let Some(linux) = c["linux"].as_object_mut() {
                linux.remove("resources");
            }
        });
        bundle
    }

    /// The bundle's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle's path as a string (for argv).
    pub fn arg(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Edits config.json in place.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let path = self.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).expect("read config"))
            .expect("config JSON");
        f(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("encode"))
            .expect("write config");
    }
}

/// Runs `cmd` with stdin closed and its stdout/stderr captured through unnamed temp files
/// (not pipes: a daemon the command leaves behind, such as a shim or conmon, may inherit them
/// and would keep a pipe open).
pub fn output_via_files(cmd: &mut Command) -> Output {
    use std::io::{Read, Seek};
    let mut out = tempfile::tempfile().expect("stdout file");
    let mut err = tempfile::tempfile().expect("stderr file");
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .status()
        .expect("spawn");
    let read = |f: &mut std::fs::File| {
        let mut buf = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut buf).expect("read");
        buf
    };
    Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}
