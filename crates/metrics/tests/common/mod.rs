//! Helpers shared by the integration tests: promtool, privilege checks, and cgroups created
//! for a test and removed by a Drop guard.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True under CI (`CI` set and not empty/false): missing tools or privileges are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips (outside CI) or fails (in CI) with `reason`. Returns false so callers can `return`.
pub fn skip_or_fail(reason: &str) -> bool {
    if in_ci() {
        panic!("CI requires this test to run, but: {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// Runs `promtool check metrics` on `text`. Returns false when skipped.
pub fn promtool_check(text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return skip_or_fail(&format!(
                "promtool not runnable ({e}); apt-get install prometheus"
            ));
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics failed ({}):\n{stdout}\n{stderr}\n--- input ---\n{text}",
        out.status
    );
    true
}

/// Parses `text` with the reference OpenMetrics parser (Debian's `python3-prometheus-client`,
/// strict about `# EOF`, `_total`, `# UNIT` and label syntax). Returns false when skipped.
pub fn openmetrics_check(text: &str) -> bool {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        fams = list(p(sys.stdin.read()))\n\
        print(len(fams))\n";
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip_or_fail(
            "the OpenMetrics reference parser is missing; apt-get install python3-prometheus-client",
        );
    }
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser rejected the exposition:\n{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(families > 0);
    true
}

/// The v1 controllers the live tests use.
pub const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "blkio"];

/// True when this process can create v1 cgroups (root on a v1/hybrid host).
pub fn can_make_v1_cgroups() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return skip_or_fail("needs root to create cgroups");
    }
    for c in V1_CONTROLLERS {
        if !Path::new("/sys/fs/cgroup")
            .join(c)
            .join("cgroup.procs")
            .is_file()
        {
            return skip_or_fail(&format!("no cgroup v1 `{c}` hierarchy on this host"));
        }
    }
    true
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique cgroup name for this process and call.
pub fn unique_name(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "berth-test-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cgroup created in several hierarchies; Drop kills its members and removes it.
#[derive(Debug)]
pub struct TestCgroup {
    pub name: String,
    pub dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `/sys/fs/cgroup/<c>/<name>` for each controller in `controllers`, plus
    /// `/sys/fs/cgroup/unified/<name>` when `unified` and the host is hybrid.
    pub fn create(tag: &str, controllers: &[&str], unified: bool) -> TestCgroup {
        Self::create_named(unique_name(tag), controllers, unified)
    }

    /// Like [`TestCgroup::create`] with an exact `name` (which must be unique).
    pub fn create_named(name: String, controllers: &[&str], unified: bool) -> TestCgroup {
        let mut cg = TestCgroup {
            name: name.clone(),
            dirs: Vec::new(),
        };
        let mut roots: Vec<PathBuf> = controllers
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .collect();
        let unified_root = Path::new("/sys/fs/cgroup/unified");
        if unified && unified_root.join("cgroup.controllers").is_file() {
            roots.push(unified_root.to_path_buf());
        }
        for root in roots {
            let dir = root.join(&name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cg.dirs.push(dir);
        }
        cg
    }

    /// The directory of this cgroup under `root_name` (`memory`, `unified`, …).
    pub fn dir(&self, root_name: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(root_name).join(&self.name)
    }

    /// Writes `value` to `file` of the cgroup in `root_name`.
    pub fn set(&self, root_name: &str, file: &str, value: &str) {
        let p = self.dir(root_name).join(file);
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// Spawns `/bin/sh -c script` already inside every directory of this cgroup: the child
    /// writes `0` to each `cgroup.procs` (fds opened here, `O_CLOEXEC`) before it execs.
    pub fn spawn_sh(&self, script: &str) -> Child {
        let fds: Vec<OwnedFd> = self
            .dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .unwrap()
                    .into()
            })
            .collect();
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls write(2), which is async-signal-safe, on fds that
        // stay open (owned by `fds`) until after spawn returns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &raw {
                    let n = libc::write(*fd, b"0".as_ptr().cast(), 1);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(fds);
        child
    }

    fn members(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.members();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for d in self.dirs.iter().rev() {
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
