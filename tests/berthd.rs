//! `berthd` end to end, as root: a daemon on a temp socket with a temp root, driven by the
//! `berth --address` CLI and by the generated tonic client; restart safety (kill -9 while a
//! container runs); audit lines and rotation; malformed requests; `/metrics`.
//!
//! Every test owns a [`Daemon`] guard (`common/berthd_support.rs`) that leaves nothing behind.
//! The attached starts, logs, metrics and terminals of `berth --address … run` are in
//! `berthd_remote.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/berthd_support.rs"]
mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use proto::containers_client::ContainersClient;
use proto::events_client::EventsClient;
use proto::images_client::ImagesClient;
use proto::snapshots_client::SnapshotsClient;
use support::{Daemon, IMAGE, eventually, http_get, prerequisites, proto, tokio};

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
    d.assert_no_mounts();

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
    let out = d.cli(&["image", "tag", IMAGE, "example.com/x:1"]);
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
        let r = c
            .logs(proto::LogsRequest {
                id: "nope".into(),
                follow: false,
            })
            .await;
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

#[test]
fn containers_survive_a_daemon_kill_and_are_found_again() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    // Orphans of the killed daemon come to us, so we can reap them.
    // SAFETY: prctl with integer arguments.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0);
    let mut d = Daemon::with_image(&fixture);
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
    d.assert_no_mounts();

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
    let d = Daemon::with_image(&fixture);
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
