//! `berthd` end to end, as root: a daemon on a temp socket with a temp root, driven by the
//! `berth --address` CLI and by the generated tonic client; restart safety (kill -9 while a
//! container runs); audit lines and rotation; malformed requests; `/metrics`.
//!
//! Every test owns a [`Daemon`] guard whose drop kills the daemon, removes every container
//! (through the in-process CLI, which reads the same records and runtime state), unmounts
//! anything left under its directory and removes it, so a failing test leaves nothing behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;

#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
#[path = "../examples/berthd/proto_gen.rs"]
mod proto;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use proto::containers_client::ContainersClient;
use proto::events_client::EventsClient;
use proto::images_client::ImagesClient;
use proto::snapshots_client::SnapshotsClient;
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "berthd-test/busybox:latest";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// A missing prerequisite: a failure under CI, else a printed skip.
fn unavailable(reason: &str) -> bool {
    if in_ci() {
        panic!("required for this test under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// Root and the busybox fixture; returns the fixture.
fn prerequisites() -> Option<PathBuf> {
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

fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run through cargo test",
        bin.display()
    );
    bin
}

/// A daemon with its own directory (root, runtime root, socket, audit log).
struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
    metrics: Option<String>,
    /// Pids of container inits orphaned to this test process by a killed daemon.
    orphans: Vec<i32>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Daemon {
    fn new() -> Daemon {
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
        };
        d.start();
        d
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn runtime_root(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("berthd.sock")
    }
    fn audit(&self) -> PathBuf {
        self.dir.join("audit/audit.log")
    }

    /// Starts berthd and waits until it listens (it prints both addresses first).
    fn start(&mut self) {
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
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// `berth --address SOCKET ARGS…`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(example_bin("berth"))
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "berth {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn channel(&self) -> Channel {
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

    /// The audit records of the live log and its backups.
    fn audit_records(&self) -> (Vec<serde_json::Value>, usize) {
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

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
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

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Polls `f` until it holds (10 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cli_and_client_drive_the_daemon() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::new();
    // A backup from ten days ago: the first rotation prunes it (--audit-log-maxage 1).
    let stale = d.audit().with_file_name("audit-stale.log");
    std::fs::write(&stale, "{}\n").unwrap();
    let ten_days = nix::sys::time::TimeVal::new(
        (std::time::SystemTime::now() - Duration::from_secs(10 * 86400))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        0,
    );
    nix::sys::stat::utimes(&stale, &ten_days, &ten_days).unwrap();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode");

    let out = d.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    assert!(out.contains(IMAGE), "{out}");
    assert!(d.cli_ok(&["image", "ls"]).contains(IMAGE));

    let rt = tokio();
    let channel = rt.block_on(d.channel());
    let mut events = rt.block_on(async {
        EventsClient::new(channel.clone())
            .subscribe(proto::SubscribeRequest {})
            .await
            .unwrap()
            .into_inner()
    });

    let id = d
        .cli_ok(&["run", "-d", "--name", "web", IMAGE, "sleep", "1000"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let ps = d.cli_ok(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains("running") && ps.contains("web"),
        "{ps}"
    );

    // The container's active snapshot, through the CLI and the Snapshots client.
    let snaps = d.cli_ok(&["snapshot", "ls"]);
    assert!(
        snaps
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("active")),
        "{snaps}"
    );
    rt.block_on(async {
        let mut s = SnapshotsClient::new(channel.clone());
        let info = s
            .stat(proto::StatSnapshotRequest {
                snapshotter: String::new(),
                key: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.kind, "active");
        assert_eq!(info.labels.get("berth.container/id"), Some(&id));
        let missing = s
            .remove(proto::RemoveSnapshotRequest {
                snapshotter: "native".into(),
                key: "nope".into(),
            })
            .await;
        assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    });

    let mut c = ContainersClient::new(channel.clone());
    rt.block_on(async {
        let r = c
            .exec(proto::ExecRequest {
                id: "web".into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hi; echo err >&2; exit 3".into(),
                ],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
            (3, &b"hi\n"[..], &b"err\n"[..])
        );
        let got = c
            .get(proto::ContainerRequest { id: id[..8].into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (got.id.as_str(), got.status.as_str()),
            (id.as_str(), "running")
        );
        assert!(got.pid > 0);
    });
    // The CLI's exec propagates the exit status.
    let out = d.cli(&["exec", &id, "sh", "-c", "echo out; exit 7"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(7), &b"out\n"[..])
    );

    let metrics = http_get(d.metrics.as_deref().unwrap(), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains(&id), "the container's series: {metrics}");
    assert!(http_get(d.metrics.as_deref().unwrap(), "/nope").starts_with("HTTP/1.1 404"));

    // (TERM would be ignored: sleep is the pid namespace's init, without handlers.)
    d.cli_ok(&["kill", &id, "KILL"]);
    let code = rt.block_on(async {
        let wait = c.wait(proto::ContainerRequest { id: id.clone() });
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("wait returns once the container is killed")
            .unwrap()
            .into_inner()
            .exit_code
    });
    assert_eq!(code, 128 + libc::SIGKILL);
    assert!(d.cli_ok(&["ps"]).contains("stopped"));
    d.cli_ok(&["rm", &id]);
    assert!(!d.cli_ok(&["ps", "-q"]).contains(&id));
    assert!(
        mounts_under(&d.dir).is_empty(),
        "{:?}",
        mounts_under(&d.dir)
    );

    // The lifecycle in the event stream.
    let kinds = rt.block_on(async {
        let mut kinds = Vec::new();
        while !kinds.iter().any(|k| k == "container-delete") {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .expect("an event")
                .unwrap()
                .unwrap();
            if ev.object == id {
                kinds.push(ev.kind);
            }
        }
        kinds
    });
    for k in [
        "container-create",
        "container-start",
        "exec",
        "container-kill",
        "container-exit",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }

    // Audit: every mutating call, with our credentials; rotated at ~520 bytes (3 lines),
    // so the 10 calls above rotated several times and 2 backups are kept.
    let (records, files) = d.audit_records();
    assert_eq!(files, 3, "audit.log and 2 backups");
    assert!(
        !stale.exists(),
        "the backup older than --audit-log-maxage is removed"
    );
    let ops: Vec<&str> = records
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    for op in ["containers.kill", "containers.delete"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
    let kill = records
        .iter()
        .find(|r| r["operation"] == "containers.kill")
        .unwrap();
    assert_eq!(kill["uid"], 0);
    assert!(kill["pid"].as_i64().unwrap() > 0);
    assert_eq!(kill["object"], id.as_str());
    assert_eq!(kill["result"], "ok");
    drop(events);

    // Removing the image collects its content.
    d.cli_ok(&["image", "rm", IMAGE]);
    assert!(!d.cli_ok(&["image", "ls"]).contains(IMAGE));
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    if prerequisites().is_none() {
        return;
    }
    let d = Daemon::new();
    let rt = tokio();
    rt.block_on(async {
        let channel = d.channel().await;
        let mut c = ContainersClient::new(channel.clone());
        let mut i = ImagesClient::new(channel.clone());
        let code =
            |r: Result<tonic::Response<proto::Container>, tonic::Status>| r.unwrap_err().code();
        let bad = proto::CreateContainerRequest {
            image: IMAGE.into(),
            network: "bogus".into(),
            ..Default::default()
        };
        assert_eq!(code(c.create(bad).await), tonic::Code::InvalidArgument);
        let bad = proto::CreateContainerRequest {
            image: "Not A Reference!".into(),
            ..Default::default()
        };
        assert_eq!(code(c.create(bad).await), tonic::Code::InvalidArgument);
        let missing = proto::CreateContainerRequest {
            image: "berthd-test/none:latest".into(),
            ..Default::default()
        };
        assert_eq!(code(c.create(missing).await), tonic::Code::NotFound);
        assert_eq!(
            code(c.get(proto::ContainerRequest { id: "nope".into() }).await),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(c.start(proto::ContainerRequest { id: String::new() }).await),
            tonic::Code::InvalidArgument
        );
        let r = c
            .kill(proto::KillRequest {
                id: "x".into(),
                signal: 999,
                all: false,
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
        let r = i
            .import(proto::ImportImageRequest {
                path: "relative.tar".into(),
                name: String::new(),
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
        let r = i
            .import(proto::ImportImageRequest {
                path: "/nonexistent/x.tar".into(),
                name: String::new(),
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);
        let r = i
            .remove(proto::RemoveImageRequest { name: "::".into() })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
        // Garbage bytes on the socket do not bring it down either.
        let mut raw = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        let _ = raw.write_all(b"\x00\x01garbage\r\n\r\n");
        drop(raw);
        // Still serving.
        i.list(proto::ListImagesRequest {}).await.unwrap();
    });
    // The failures are audited with their codes (the last ones: the log rotates at ~520 bytes).
    let (records, _) = d.audit_records();
    assert!(
        records.iter().any(|r| r["operation"] == "images.remove"
            && r["object"] == "::"
            && r["result"].as_str().unwrap().starts_with("InvalidArgument")),
        "{records:?}"
    );
    // The CLI says clearly what it cannot do remotely.
    let out = d.cli(&["commit", "x", "example.com/x:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported with --address"));
    let out = d.cli(&["run", "-d", "-t", IMAGE, "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-d takes no"));
    // Attached starts, logs and metrics of what does not exist, or without a first message.
    rt.block_on(async {
        let mut c = ContainersClient::new(d.channel().await);
        let empty = tokio_stream::iter(Vec::<proto::AttachRequest>::new());
        let r = c.start_attached(empty).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
        let nope = tokio_stream::iter(vec![proto::AttachRequest {
            id: "nope".into(),
            ..Default::default()
        }]);
        let r = c.start_attached(nope).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);
        let r = c.logs(proto::ContainerRequest { id: "nope".into() }).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);
        let r = c
            .metrics(proto::MetricsRequest {
                ids: vec!["nope".into()],
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);
        let all = c.metrics(proto::MetricsRequest { ids: vec![] }).await;
        assert!(all.unwrap().into_inner().containers.is_empty());
    });
}

/// `berth --address … ARGS` with stdin and stdout piped, stderr captured.
fn spawn_cli(d: &Daemon, args: &[&str]) -> Child {
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

#[test]
fn remote_run_attached_streams_stdio_signals_logs_and_metrics() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::new();
    d.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);

    // Output streams back on the right stream, the exit code is ours, --rm removes it.
    let out = d.cli(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(out.stdout, b"out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{out:?}"
    );
    assert_eq!(d.cli_ok(&["ps", "-q"]), "");

    // -i: our stdin reaches the container; its end is the container's EOF.
    let mut child = spawn_cli(
        &d,
        &["run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done"],
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello from stdin\ndone\n");

    // Signals to the client go to the container's init.
    let mut child = spawn_cli(
        &d,
        &[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(9));

    // Without --rm the stopped container stays; its output is in its log, served remotely.
    let out = d.cli(&[
        "run",
        "--name",
        "kept",
        IMAGE,
        "sh",
        "-c",
        "echo kept-out; echo kept-err >&2",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"kept-out\n");
    let log = d.cli_ok(&["logs", "kept"]);
    assert!(
        log.contains("kept-out\n") && log.contains("kept-err\n"),
        "{log:?}"
    );
    assert!(d.cli_ok(&["ps"]).contains("stopped"));

    // A client that goes away mid-stream stops nothing: the container runs on, its output
    // goes to its log, and its exit code is still known to Wait.
    let rt = tokio();
    rt.block_on(async {
        let mut c = ContainersClient::new(d.channel().await);
        let created = c
            .create(proto::CreateContainerRequest {
                image: IMAGE.into(),
                name: "leaver".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo first; sleep 1; echo second; exit 4".into(),
                ],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(proto::AttachRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut out = c
            .start_attached(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = out.message().await.unwrap().unwrap();
        assert_eq!(
            first.event,
            Some(proto::attach_response::Event::Stdout(b"first\n".to_vec()))
        );
        drop((out, tx));
        let wait = c.wait(proto::ContainerRequest {
            id: created.id.clone(),
        });
        let code = tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("the container ends")
            .unwrap()
            .into_inner()
            .exit_code;
        assert_eq!(code, 4);
    });
    let log = d.cli_ok(&["logs", "leaver"]);
    assert_eq!(log, "first\nsecond\n");
    d.cli_ok(&["rm", "leaver"]);

    // Metrics through the daemon: a running container by name, all running ones, JSON and
    // Prometheus; a stopped one named explicitly is an error.
    let id = d
        .cli_ok(&[
            "run",
            "-d",
            "--name",
            "busy",
            "--pids-limit",
            "20",
            IMAGE,
            "sleep",
            "1000",
        ])
        .trim()
        .to_owned();
    // Names stay unique through the daemon too.
    let out = d.cli(&["run", "-d", "--name", "busy", IMAGE, "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
        "{out:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["metrics", "--json", "busy"])).unwrap();
    let stats = json.as_array().unwrap();
    assert_eq!(stats.len(), 1, "{json}");
    assert_eq!(stats[0]["id"], id.as_str());
    let table = d.cli_ok(&["metrics"]);
    assert!(table.contains(&id) && table.contains("20"), "{table}");
    assert_eq!(
        table.lines().count(),
        2,
        "only the running container: {table}"
    );
    let prom = d.cli_ok(&["metrics", "--prometheus", &id[..10]]);
    assert!(prom.contains(&format!("container_id=\"{id}\"")), "{prom}");
    let out = d.cli(&["metrics", "kept"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );

    // The attached starts are audited.
    let (records, _) = d.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "containers.start-attached"),
        "{records:?}"
    );
    d.cli_ok(&["rm", "-f", "busy", "kept"]);
    assert_eq!(d.cli_ok(&["ps", "-q"]), "");
    assert!(
        mounts_under(&d.dir).is_empty(),
        "{:?}",
        mounts_under(&d.dir)
    );
}

#[test]
fn containers_survive_a_daemon_kill_and_are_found_again() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    // Orphans of the killed daemon come to us, so we can reap them.
    // SAFETY: prctl with integer arguments.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0);
    let mut d = Daemon::new();
    d.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    let id = d
        .cli_ok(&["run", "-d", IMAGE, "sleep", "1000"])
        .trim()
        .to_owned();
    let state = berth::runtime::read_state(&d.runtime_root(), &id).unwrap();
    let pid = state.pid.unwrap();
    d.orphans.push(pid);

    d.kill9();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signal 0 only checks the process exists.
    let alive = unsafe { libc::kill(pid, 0) };
    assert_eq!(alive, 0, "the container outlived the daemon");
    assert_eq!(
        berth::runtime::read_state(&d.runtime_root(), &id)
            .unwrap()
            .status,
        berth::runtime::Status::Running
    );

    d.start();
    let ps = d.cli_ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("running"), "{ps}");
    d.cli_ok(&["kill", &id]);
    // We are its parent now: reap it so its state reads stopped.
    let mut st = 0;
    // SAFETY: waiting for our (adopted) child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL);
    let rt = tokio();
    let code = rt.block_on(async {
        let mut c = ContainersClient::new(d.channel().await);
        let wait = c.wait(proto::ContainerRequest { id: id.clone() });
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("wait returns once the container stopped")
            .unwrap()
            .into_inner()
            .exit_code
    });
    assert_eq!(code, -1, "not the daemon's child: only its end is known");
    eventually("stopped", || d.cli_ok(&["ps"]).contains("stopped"));
    d.cli_ok(&["rm", &id]);
    assert!(d.cli_ok(&["ps", "-q"]).trim().is_empty());
    assert!(mounts_under(&d.dir).is_empty());

    // SIGTERM: a clean exit that removes the socket.
    let mut child = d.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!d.socket().exists());
}

#[test]
fn oom_kills_are_streamed_as_events() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::new();
    d.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    let rt = tokio();
    rt.block_on(async {
        let channel = d.channel().await;
        let mut events = EventsClient::new(channel.clone())
            .subscribe(proto::SubscribeRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut c = ContainersClient::new(channel);
        // dd fills a 64 MiB buffer under a 16 MiB limit (this host has no swap); the sleep
        // lets the daemon's OOM watcher register first.
        let created = c
            .create(proto::CreateContainerRequest {
                image: IMAGE.into(),
                memory: "16m".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1".into(),
                ],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let id = created.id;
        c.start(proto::ContainerRequest { id: id.clone() })
            .await
            .unwrap();
        let oom = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let ev = events.message().await.unwrap().unwrap();
                if ev.object == id && ev.kind == "oom" {
                    return ev;
                }
            }
        })
        .await
        .expect("an oom event");
        assert_eq!(oom.object, id);
        let code = c
            .wait(proto::ContainerRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .exit_code;
        assert_ne!(code, 0, "dd was killed");
        c.delete(proto::DeleteRequest { id, force: true })
            .await
            .unwrap();
    });
}

#[test]
fn remote_run_with_a_terminal_under_a_pty() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    if Command::new("script").arg("--version").output().is_err() {
        unavailable("script(1) from util-linux");
        return;
    }
    let d = Daemon::new();
    d.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    let berth = example_bin("berth");
    let line = format!(
        "stty cols 91 rows 17; {} --address {} run --rm -t {IMAGE} sh -c 'tty; test -t 0 && test -t 1 && echo both-ttys; stty size; exit 7'",
        berth.display(),
        d.socket().display()
    );
    let out = pty::run_under_pty(&line, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("both-ttys"), "{text}");
    assert!(
        text.contains("17 91"),
        "the window size follows ours: {text}"
    );
    assert_eq!(out.status.code(), Some(7), "{text}");
    // -t -i: raw mode on our side, keys typed reach the container's terminal.
    let line = format!(
        "(sleep 2; printf 'echo typed-$((40+2))\\r'; sleep 1; printf 'exit 3\\r') | script -qec '{} --address {} run --rm -t -i {IMAGE} sh' /dev/null",
        berth.display(),
        d.socket().display()
    );
    let out = pty::run_under_pty(&line, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed-42"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(d.cli_ok(&["ps", "-q"]), "");

    // A container with a terminal starts attached only.
    let rt = tokio();
    rt.block_on(async {
        let mut c = ContainersClient::new(d.channel().await);
        let created = c
            .create(proto::CreateContainerRequest {
                image: IMAGE.into(),
                command: vec!["true".into()],
                tty: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let r = c
            .start(proto::ContainerRequest {
                id: created.id.clone(),
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::FailedPrecondition);
        c.delete(proto::DeleteRequest {
            id: created.id,
            force: true,
        })
        .await
        .unwrap();
    });
    assert!(
        mounts_under(&d.dir).is_empty(),
        "{:?}",
        mounts_under(&d.dir)
    );
}
