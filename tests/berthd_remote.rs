//! `berth --address SOCKET run` through `berthd`, as root: attached starts (stdout and stderr
//! streamed back, `-i` stdin, signals forwarded, exit codes, `--rm`), a client leaving
//! mid-stream, `logs` and `metrics` through the daemon, names unique through it, and `-t`
//! under a pty harness. Every test owns a [`Daemon`] guard (`common/berthd_support.rs`) that
//! leaves nothing behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "common/remote_terminal.rs"]
mod remote_terminal;
#[path = "common/berthd_support.rs"]
mod support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use proto::containers_client::ContainersClient;
use support::{
    Daemon, IMAGE, TRAP_TERM, assert_term_is_forwarded, example_bin, prerequisites, proto,
    spawn_cli, tokio, unavailable,
};

#[test]
fn remote_run_attached_streams_stdio_signals_logs_and_metrics() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::with_image(&fixture);

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
    let mut child = spawn_cli(&d, &["run", "--rm", IMAGE, "sh", "-c", TRAP_TERM]);
    assert_term_is_forwarded(&mut child);
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
    d.assert_no_mounts();
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
    let d = Daemon::with_image(&fixture);
    remote_terminal::assert_remote_terminal(&d, "run --rm", IMAGE, 91, 17);
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
    d.assert_no_mounts();
}

#[test]
fn the_daemon_and_the_in_process_cli_share_the_records() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::with_image(&fixture);
    // A container made in-process, beside the running daemon, on the same root.
    let local = |args: &[&str]| {
        Command::new(example_bin("berth"))
            .arg("--root")
            .arg(d.root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let runtime_root = d.runtime_root();
    let out = local(&[
        "run",
        "-d",
        "--runtime-root",
        runtime_root.to_str().unwrap(),
        "--name",
        "shared",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // The daemon sees it, refuses its name, and can stop and remove it.
    let ps = d.cli_ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("shared"), "{ps}");
    let out = d.cli(&["run", "-d", "--name", "shared", IMAGE, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
        "{out:?}"
    );
    // And the other way round: the daemon's container is the CLI's to see.
    let remote = d
        .cli_ok(&["run", "-d", "--name", "remote", IMAGE, "sleep", "1000"])
        .trim()
        .to_owned();
    let out = local(&["ps", "-q"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.contains(&id) && listed.contains(&remote), "{listed}");
    d.cli_ok(&["rm", "-f", "shared", "remote"]);
    let out = local(&["ps", "-q"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    d.assert_no_mounts();
}
