//! `berth --address SOCKET exec` (through `ExecAttached`) and `logs -f` (through a following
//! `Logs` stream), as root: stdin with `-i`, a terminal with `-t` under the pty harness, exit
//! codes, signals to the exec'd process; a followed log printing what is written after the
//! follow began and ending with the container, for the daemon's detached and attached
//! containers and for one the in-process CLI started; Ctrl-C ends a follow cleanly. Every
//! test owns a [`Daemon`] guard (`common/berthd_support.rs`) that leaves nothing behind.
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

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use proto::containers_client::ContainersClient;
use support::{
    Daemon, IMAGE, TRAP_TERM, assert_term_is_forwarded, example_bin, prerequisites, proto,
    spawn_cli, tokio, unavailable,
};

/// Waits for `child` at most `secs` seconds; kills it and fails after that.
fn output_within(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end within {secs} s: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `berth --address … ARGS` with its stdin closed at once.
fn spawn_quiet(d: &Daemon, args: &[&str]) -> Child {
    let mut child = spawn_cli(d, args);
    drop(child.stdin.take());
    child
}

#[test]
fn remote_exec_streams_stdin_output_signals_and_exit_codes() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::with_image(&fixture);
    let id = d
        .cli_ok(&["run", "-d", "--name", "host", IMAGE, "sleep", "1000"])
        .trim()
        .to_owned();

    // -i: our stdin reaches the process; its end is the process's EOF.
    let mut child = spawn_cli(&d, &["exec", "-i", &id, "cat"]);
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = output_within(child, 30, "exec -i cat");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hi\n");

    // Without -i the process reads /dev/null, whatever we have on stdin.
    let mut child = spawn_cli(&d, &["exec", "host", "sh", "-c", "cat; echo eof"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"not for it\n").unwrap();
    let out = output_within(child, 30, "exec without -i");
    drop(stdin);
    assert_eq!(out.stdout, b"eof\n", "{out:?}");

    // Output on the right streams, the exit code ours.
    let out = d.cli(&[
        "exec",
        &id[..10],
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(out.stdout, b"out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("err\n"),
        "{out:?}"
    );
    // -e, -u and -w reach the process.
    let out = d.cli_ok(&[
        "exec",
        "-e",
        "GREETING=hey",
        "-u",
        "1:1",
        "-w",
        "/bin",
        "host",
        "sh",
        "-c",
        "echo $GREETING $(id -u):$(id -g) $PWD",
    ]);
    assert_eq!(out, "hey 1:1 /bin\n");

    // Signals to the client go to the exec'd process (not to the container's init).
    let mut child = spawn_quiet(&d, &["exec", "host", "sh", "-c", TRAP_TERM]);
    assert_term_is_forwarded(&mut child);
    assert_eq!(
        output_within(child, 30, "exec after TERM").status.code(),
        Some(9)
    );
    assert!(d.cli_ok(&["ps"]).contains("running"), "the init runs on");

    // A bad request is refused before anything runs.
    let out = d.cli(&["exec", "nope", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );
    let rt = tokio();
    rt.block_on(async {
        let mut c = ContainersClient::new(d.channel().await);
        // A terminal needs the attached call.
        let r = c
            .exec(proto::ExecRequest {
                id: id.clone(),
                args: vec!["true".into()],
                tty: true,
                ..Default::default()
            })
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
        // The first message of ExecAttached must carry the process.
        let first = tokio_stream::iter(vec![proto::AttachRequest {
            id: id.clone(),
            ..Default::default()
        }]);
        let r = c.exec_attached(first).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
    });

    // Audited; the exec'd processes are not in the container's log.
    let (records, _) = d.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "containers.exec-attached" && r["result"] == "ok"),
        "{records:?}"
    );
    assert_eq!(d.cli_ok(&["logs", "host"]), "");
    d.cli_ok(&["rm", "-f", "host"]);
    assert_eq!(d.cli_ok(&["ps", "-q"]), "");
    d.assert_no_mounts();
}

#[test]
fn remote_exec_with_a_terminal_under_a_pty() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    if Command::new("script").arg("--version").output().is_err() {
        unavailable("script(1) from util-linux");
        return;
    }
    let d = Daemon::with_image(&fixture);
    let id = d
        .cli_ok(&["run", "-d", IMAGE, "sleep", "1000"])
        .trim()
        .to_owned();
    remote_terminal::assert_remote_terminal(&d, "exec", &id, 93, 19);
    let berth = example_bin("berth");
    // Two terminals at once in one container: each its own.
    let line = format!(
        "{b} --address {s} exec -t {id} sh -c 'sleep 1; tty' & {b} --address {s} exec -t {id} sh -c 'sleep 1; tty'; wait",
        b = berth.display(),
        s = d.socket().display()
    );
    let out = pty::run_under_pty(&line, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    let ttys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/pts/"))
        .collect();
    assert_eq!(ttys.len(), 2, "{text}");
    assert_ne!(ttys[0], ttys[1], "{text}");
    d.cli_ok(&["rm", "-f", &id]);
    d.assert_no_mounts();
}

#[test]
fn remote_logs_follow_ends_with_the_container() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let d = Daemon::with_image(&fixture);

    // A detached container, followed right after `run -d`.
    let id = d
        .cli_ok(&[
            "run",
            "-d",
            IMAGE,
            "sh",
            "-c",
            "echo a; sleep 1; echo b >&2",
        ])
        .trim()
        .to_owned();
    let out = output_within(spawn_quiet(&d, &["logs", "-f", &id]), 30, "logs -f");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"a\nb\n");
    // Once stopped: the whole log, at once.
    let out = output_within(spawn_quiet(&d, &["logs", "-f", &id]), 10, "logs -f");
    assert_eq!(out.stdout, b"a\nb\n", "{out:?}");
    d.cli_ok(&["rm", &id]);

    // An attached container: its output reaches the log through the daemon, and the follow
    // waits for all of it.
    let mut run = spawn_quiet(
        &d,
        &[
            "run",
            "--name",
            "att",
            IMAGE,
            "sh",
            "-c",
            "echo x; sleep 1; echo y; exit 3",
        ],
    );
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "x\n");
    let out = output_within(spawn_quiet(&d, &["logs", "-f", "att"]), 30, "logs -f att");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"x\ny\n");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert_eq!(output_within(run, 30, "run att").status.code(), Some(3));
    d.cli_ok(&["rm", "att"]);

    // A container the in-process CLI started on the daemon's root (not the daemon's child):
    // the daemon watches its init through a pidfd.
    let runtime_root = d.runtime_root();
    let out = Command::new(example_bin("berth"))
        .arg("--root")
        .arg(d.root())
        .args([
            "run",
            "-d",
            "--runtime-root",
            runtime_root.to_str().unwrap(),
            IMAGE,
            "sh",
            "-c",
            "echo local-a; sleep 1; echo local-b",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let local = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = output_within(spawn_quiet(&d, &["logs", "-f", &local]), 30, "logs -f");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"local-a\nlocal-b\n");
    d.cli_ok(&["rm", &local]);

    // Ctrl-C ends a follow cleanly; the container runs on.
    d.cli_ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        IMAGE,
        "sh",
        "-c",
        "echo ready; while :; do sleep 0.2; echo tick; done",
    ]);
    let mut follow = spawn_quiet(&d, &["logs", "-f", "ticker"]);
    let mut stdout = BufReader::new(follow.stdout.take().unwrap());
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "tick\n", "output written after the follow started");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(follow.id() as i32, libc::SIGINT) }, 0);
    let out = output_within(follow, 10, "logs -f after SIGINT");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(d.cli_ok(&["ps"]).contains("running"));
    // The daemon still serves (its follow ended with the client), and removing the container
    // ends any follow of it.
    let follow = spawn_quiet(&d, &["logs", "-f", "ticker"]);
    std::thread::sleep(Duration::from_millis(300));
    d.cli_ok(&["rm", "-f", "ticker"]);
    let out = output_within(follow, 30, "logs -f of a removed container");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ready\n"));
    assert_eq!(d.cli_ok(&["ps", "-q"]), "");
    d.assert_no_mounts();
}
