//! The `berthd` tests' shared parts: prerequisites (root, the busybox fixture; a failure under
//! CI, a printed skip elsewhere), the built example binaries, and [`Daemon`], a daemon on a
//! temp socket with a temp root whose drop kills it, removes every container (through the
//! in-process CLI, which reads the same records and runtime state), unmounts anything left
//! under its directory and removes it, so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint, Uri};

/// The gRPC client and message types (the committed `examples/berthd/proto_gen.rs`).
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
#[path = "../../examples/berthd/proto_gen.rs"]
pub mod proto;

/// The `berth` tests' support: its skip policy, example-binary lookup and mount listing are
/// the daemon tests' too.
#[path = "berth_support.rs"]
mod berth_support;

pub use berth_support::{example_bin, mounts_under, unavailable};

pub const IMAGE: &str = "berthd-test/busybox:latest";

/// Root and the busybox fixture; returns the fixture.
pub fn prerequisites() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unavailable("running as root");
        return None;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/busybox.oci.tar");
    if !fixture.is_file() {
        unavailable(&format!("the fixture {}", fixture.display()));
        return None;
    }
    Some(fixture)
}

/// A daemon with its own directory (root, runtime root, socket, audit log).
pub struct Daemon {
    /// Its directory (root, runtime root, socket, audit log).
    pub dir: PathBuf,
    /// The daemon process while it runs.
    pub child: Option<Child>,
    /// The `/metrics` address (`host:port`).
    pub metrics: Option<String>,
    /// Pids of container inits orphaned to this test process by a killed daemon.
    pub orphans: Vec<i32>,
    /// More berthd arguments (e.g. its registry settings), given at every start.
    pub extra_args: Vec<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Daemon {
    pub fn new() -> Daemon {
        Daemon::with_args(&[])
    }

    /// [`Daemon::new`] with more berthd arguments.
    pub fn with_args(extra_args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "berthd-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Daemon {
            dir,
            child: None,
            metrics: None,
            orphans: Vec::new(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        d.start();
        d
    }

    /// [`Daemon::new`], with the fixture `archive` imported through it as [`IMAGE`].
    pub fn with_image(archive: &Path) -> Daemon {
        let d = Daemon::new();
        d.cli_ok(&[
            "image",
            "import",
            archive.to_str().unwrap(),
            "--name",
            IMAGE,
        ]);
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("berthd.sock")
    }
    pub fn audit(&self) -> PathBuf {
        self.dir.join("audit/audit.log")
    }

    /// Starts berthd and waits until it listens (it prints both addresses first).
    pub fn start(&mut self) {
        let mut child = Command::new(example_bin("berthd"))
            .arg("--root")
            .arg(self.root())
            .arg("--runtime-root")
            .arg(self.runtime_root())
            .arg("--address")
            .arg(self.socket())
            .arg("--audit-log")
            .arg(self.audit())
            .args([
                "--audit-log-maxsize",
                "0.0005",
                "--audit-log-maxbackup",
                "2",
                "--audit-log-maxage",
                "1",
            ])
            .args(["--metrics-address", "127.0.0.1:0"])
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("berthd exited before listening: {status}");
            }
            if let Some(rest) = line.trim().strip_prefix("metrics on http://") {
                self.metrics = rest.strip_suffix("/metrics").map(str::to_owned);
            }
            if line.starts_with("listening on ") {
                break;
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        self.child = Some(child);
    }

    /// kill -9 (containers must survive it).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `berth --address SOCKET ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(example_bin("berth"))
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "berth {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn channel(&self) -> Channel {
        let path = self.socket();
        Endpoint::try_from("http://berthd.invalid")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap()
    }

    /// Asserts that nothing is mounted under the daemon's directory.
    pub fn assert_no_mounts(&self) {
        let left = mounts_under(&self.dir);
        assert!(left.is_empty(), "mounts left: {left:?}");
    }

    /// The audit records of the live log and its backups.
    pub fn audit_records(&self) -> (Vec<serde_json::Value>, usize) {
        let dir = self.audit().parent().unwrap().to_path_buf();
        let mut lines = Vec::new();
        let mut files = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            files += 1;
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                lines.push(serde_json::from_str(l).unwrap());
            }
        }
        (lines, files)
    }
}

impl Daemon {
    /// The digest `berth image ls` shows for `name` (docker.io names normalised).
    pub fn image_digest(&self, name: &str) -> Option<String> {
        let normalised = format!("docker.io/{name}");
        self.cli_ok(&["image", "ls"]).lines().find_map(|l| {
            let mut cols = l.split_whitespace();
            let listed = cols.next()?;
            (listed == name || listed == normalised).then(|| cols.next().unwrap().to_owned())
        })
    }

    /// The audit records of `operation` (in the live log and its backups: the test daemon's
    /// log rotates at about 520 bytes, so check soon after the call).
    pub fn audited(&self, operation: &str) -> Vec<serde_json::Value> {
        let (records, _) = self.audit_records();
        records
            .into_iter()
            .filter(|r| r["operation"] == operation)
            .collect()
    }
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let containers = self.root().join("containers");
        for e in std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = Command::new(example_bin("berth"))
                .arg("--root")
                .arg(self.root())
                .args(["rm", "-f", &id])
                .output();
        }
        for pid in &self.orphans {
            let mut st = 0;
            // SAFETY: reaping an orphaned child of ours, without blocking.
            unsafe { libc::waitpid(*pid, &mut st, libc::WNOHANG) };
        }
        for m in mounts_under(&self.dir) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Polls `f` until it holds (10 s).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sh -c` script that prints `ready`, then answers SIGTERM with `got-term` and exit 9.
pub const TRAP_TERM: &str =
    "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done";

/// Sends SIGTERM to a client `child` (from [`spawn_cli`], running [`TRAP_TERM`]) once the
/// process printed `ready`, and asserts the process it forwards the signal to answers
/// `got-term`. The caller then checks the exit code (9).
pub fn assert_term_is_forwarded(child: &mut Child) {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
}

/// `berth --address … ARGS` with stdin and stdout piped, stderr captured.
pub fn spawn_cli(d: &Daemon, args: &[&str]) -> Child {
    Command::new(example_bin("berth"))
        .arg("--address")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
