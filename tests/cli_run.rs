//! `berth run` and the container commands, driven through the built `berth` example against
//! a unique store root holding a busybox image built from the host's `/bin/busybox`, and a
//! unique runtime state root. Needs root (skips with a reason outside CI, fails under CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "common/berth_support.rs"]
mod support;

use pty::run_under_pty;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use support::{Env, IMAGE, describe, have_tool, prerequisites};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_rm_prints_and_propagates_exit_codes() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("run");
    let out = env.run(&["--rm", IMAGE, "echo", "hi"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "hi\n");

    let out = env.run(&["--rm", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));

    // The image's Cmd runs when none is given.
    let out = env.run(&["--rm", IMAGE]);
    assert_eq!(stdout(&out), "default-cmd\n", "{}", describe(&out));

    // --rm left no container behind.
    assert_eq!(env.ok(&["ps", "-q"]), "");
    let snaps = env.ok(&["snapshot", "ls"]);
    assert_eq!(
        snaps.lines().count(),
        2,
        "only the image's layer is left:\n{snaps}"
    );
    assert!(support::mounts_under(&env.root).is_empty());
}

#[test]
fn run_killed_container_exits_128_plus_signal() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("kill");
    let mut child = env
        .run_cmd(&["--rm", "--name", "sleeper", IMAGE, "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for("the container to run", || {
        env.berth(&["ps"])
            .stdout
            .windows(7)
            .any(|w| w == b"running")
    });
    let id = env.ok(&["ps", "-q"]).trim().to_owned();
    env.ok(&["kill", "sleeper", "KILL"]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    env.assert_gone(&id);
}

#[test]
fn env_workdir_and_user_take_effect() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("opts");
    let script = "echo $GREETING $FOO; pwd; id -u; id -g; id -G; echo $HOME";
    // Image defaults: Env and WorkingDir from the image config, root.
    let out = env.run(&["--rm", IMAGE, "sh", "-c", script]);
    assert_eq!(
        stdout(&out),
        "from-image\n/srv\n0\n0\n0\n/root\n",
        "{}",
        describe(&out)
    );
    // Options override them; the user is resolved in the image's /etc/passwd and /etc/group.
    let out = env.run(&[
        "--rm",
        "-e",
        "FOO=bar",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        "-u",
        "app",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        stdout(&out),
        "hello bar\n/tmp\n1000\n1000\n1000 10\n/home/app\n",
        "{}",
        describe(&out)
    );
    let out = env.run(&[
        "--rm",
        "-u",
        "4242:wheel",
        IMAGE,
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(stdout(&out), "4242\n10\n", "{}", describe(&out));
    let out = env.run(&["--rm", "-u", "ghost", IMAGE, "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unable to find user ghost"));
    assert_eq!(
        env.ok(&["ps", "-q"]),
        "",
        "a failed run leaves no container"
    );
}

#[test]
fn bind_mounts_and_network_modes() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("mounts");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("file"), "from the host\n").unwrap();
    let ro = format!("{}:/data:ro", host.path().display());
    let out = env.run(&[
        "--rm",
        "--mount",
        &ro,
        IMAGE,
        "sh",
        "-c",
        "cat /data/file; echo x > /data/new || echo ro",
    ]);
    assert_eq!(stdout(&out), "from the host\nro\n", "{}", describe(&out));
    let rw = format!("{}:/data", host.path().display());
    let out = env.run(&[
        "--rm",
        "--mount",
        &rw,
        IMAGE,
        "sh",
        "-c",
        "echo written > /data/new",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(host.path().join("new")).unwrap(),
        "written\n"
    );
    // --network none: only a loopback interface, and it is up.
    let out = env.run(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "ls /sys/class/net; ping -c1 -W2 127.0.0.1 >/dev/null && echo lo-up",
    ]);
    assert_eq!(stdout(&out), "lo\nlo-up\n", "{}", describe(&out));
    // --network host: the host's interfaces.
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let out = env.run(&["--rm", "--network", "host", IMAGE, "ls", "/sys/class/net"]);
    assert_eq!(
        stdout(&out).lines().count(),
        host_ifaces,
        "{}",
        describe(&out)
    );
}

#[test]
fn tty_under_a_pty() {
    if !prerequisites() || !have_tool("script") {
        return;
    }
    let env = Env::new("tty");
    let line = format!(
        "{} --root {} run --rm -t --runtime-root {} {IMAGE} sh -c 'tty; test -t 0 && test -t 1 && echo both-ttys; exit 7'",
        support::example_bin("berth").display(),
        env.root.display(),
        env.state.display()
    );
    let out = run_under_pty(&line, 60);
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/"), "{}", describe(&out));
    assert!(text.contains("both-ttys"), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(env.ok(&["ps", "-q"]), "");
}

#[test]
fn detached_logs_ps_exec_kill_rm() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("detached");
    let id = env.run_detached(&[
        "--name",
        "svc",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exec sleep 1000",
    ]);
    env.wait_for("the log", || {
        let log = env.ok(&["logs", "svc"]);
        log.contains("out\n") && log.contains("err\n")
    });
    assert_eq!(env.status(&id).as_deref(), Some("running"));
    let ps = env.ok(&["ps"]);
    assert!(
        ps.contains("svc") && ps.contains("docker.io/berth-test/busybox:latest"),
        "{ps}"
    );

    assert_eq!(
        env.ok(&["exec", "svc", "sh", "-c", "echo exec-ok; hostname"]),
        format!("exec-ok\n{}\n", &id[..12])
    );
    let out = env.berth(&["exec", &id[..8], "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(
        env.ok(&[
            "exec",
            "-u",
            "app",
            "-w",
            "/tmp",
            "svc",
            "sh",
            "-c",
            "id -u; pwd"
        ]),
        "1000\n/tmp\n"
    );

    let out = env.berth(&["rm", "svc"]);
    assert!(!out.status.success(), "rm of a running container must fail");
    env.ok(&["kill", "svc", "TERM"]);
    env.ok(&["kill", "svc"]);
    env.wait_for("the container to stop", || {
        env.status(&id).as_deref() == Some("stopped")
    });
    env.ok(&["rm", "svc"]);
    env.assert_gone(&id);

    // rm -f removes a running container.
    let id = env.run_detached(&[IMAGE, "sleep", "1000"]);
    env.ok(&["rm", "-f", &id]);
    env.assert_gone(&id);
    assert_eq!(env.ok(&["ps", "-q"]), "");
}

#[test]
fn records_live_in_the_metadata_db_and_names_stay_unique() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("names");
    let id = env.run_detached(&["--name", "web", IMAGE, "sleep", "1000"]);
    // The record is in the store's database, not a file in the container's directory.
    let keys = env.record_keys();
    assert_eq!(keys, [format!("container/{id}"), "name/web".to_owned()]);
    let dir = env.root.join("containers").join(&id);
    assert!(dir.join("config.json").exists() && !dir.join("container.json").exists());

    // A name in use is refused, and the refused run leaves nothing.
    let out = env.run(&["-d", "--name", "web", IMAGE, "true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already in use"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.ok(&["ps", "-q"]).trim(), id);

    // Processes racing for one name: exactly one wins, the losers leave nothing.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            env.run_cmd(&["-d", "--name", "dup", IMAGE, "sleep", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        outs.iter().map(describe).collect::<Vec<_>>()
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("already in use"),
            "{}",
            describe(o)
        );
    }
    let dup = stdout(winners[0]).trim().to_owned();
    assert_eq!(env.ok(&["ps", "-q"]).lines().count(), 2);
    assert_eq!(
        std::fs::read_dir(env.root.join("containers"))
            .unwrap()
            .count(),
        2,
        "a losing run left its directory"
    );

    // Removing a container frees its name.
    env.ok(&["rm", "-f", "web"]);
    assert!(!dir.exists());
    assert_eq!(
        env.record_keys(),
        [format!("container/{dup}"), "name/dup".to_owned()]
    );
    let again = env.run_detached(&["--name", "web", IMAGE, "sleep", "1000"]);

    // A record in the file older berths wrote is moved into the database on first sight.
    let store = berth::image::content::ContentStore::open(&env.root.join("content")).unwrap();
    let records = store.records("berth.containers").unwrap();
    let bytes = records.get(&format!("container/{again}")).unwrap();
    records
        .update(|t| {
            t.remove(&format!("container/{again}"))?;
            t.remove("name/web")
        })
        .unwrap();
    let legacy = env
        .root
        .join("containers")
        .join(&again)
        .join("container.json");
    std::fs::write(&legacy, &bytes).unwrap();
    assert!(env.ok(&["ps", "-q"]).contains(&again));
    assert!(!legacy.exists(), "the legacy file is removed once migrated");
    assert_eq!(records.get(&format!("container/{again}")).unwrap(), bytes);
    assert_eq!(records.get("name/web").unwrap(), again.as_bytes());
    drop((records, store));
    env.ok(&["rm", "-f", &again, "dup"]);
    env.assert_gone(&again);
    env.assert_gone(&dup);
    assert!(env.record_keys().is_empty());
}

#[test]
fn commit_makes_an_image_with_the_changes() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("commit");
    let id = env.run_detached(&[IMAGE, "sleep", "1000"]);
    env.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo committed > /etc/marker; rm /bin/cat",
    ]);
    let out = env.ok(&["commit", &id, "berth-test/committed:v1"]);
    assert!(
        out.starts_with("docker.io/berth-test/committed:v1 sha256:"),
        "{out}"
    );
    env.ok(&["rm", "-f", &id]);
    let out = env.run(&[
        "--rm",
        "berth-test/committed:v1",
        "sh",
        "-c",
        "read l < /etc/marker; echo $l; ls /bin/cat || echo no-cat",
    ]);
    assert_eq!(stdout(&out), "committed\nno-cat\n", "{}", describe(&out));
    // The base image is unchanged.
    let out = env.run(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "ls /etc/marker 2>/dev/null || echo clean",
    ]);
    assert_eq!(stdout(&out), "clean\n");
    // The committed image carries its image config (Env) and one more layer.
    let out = env.run(&[
        "--rm",
        "berth-test/committed:v1",
        "sh",
        "-c",
        "echo $GREETING",
    ]);
    assert_eq!(stdout(&out), "from-image\n");
    let snaps = env.ok(&["snapshot", "ls"]);
    assert_eq!(snaps.lines().count(), 3, "two committed layers:\n{snaps}");
}

#[test]
fn stdin_signals_and_volumes() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("stdin");
    // -i: our stdin reaches the container; without it the container reads /dev/null.
    let mut child = env
        .run_cmd(&["--rm", "-i", IMAGE, "sh", "-c", "read l; echo got:$l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "got:piped\n", "{}", describe(&out));
    let out = env.run(&["--rm", IMAGE, "sh", "-c", "read l || echo eof"]);
    assert_eq!(stdout(&out), "eof\n");

    // SIGTERM sent to berth reaches the container, whose trap decides the exit status.
    let mut child = env
        .run_cmd(&[
            "--rm",
            "--name",
            "trap",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo caught; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(9));
    assert_eq!(rest, "caught\n");

    // The image's Volumes become writable directories under the container's directory.
    let image = support::add_volume_image(&env.root);
    let id = env.run_detached(&[image, "sleep", "1000"]);
    env.ok(&["exec", &id, "sh", "-c", "echo data > /vol/file"]);
    let on_host = env.root.join("containers").join(&id).join("volumes/0/file");
    assert_eq!(std::fs::read_to_string(on_host).unwrap(), "data\n");
    env.ok(&["rm", "-f", &id]);
    env.assert_gone(&id);
}

/// Waits for `child` (stdout piped) at most `secs` seconds; kills it and fails after that.
fn output_within(mut child: std::process::Child, secs: u64, what: &str) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end within {secs} s: {}", describe(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn logs_follow_prints_new_output_and_ends_with_the_container() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("follow");
    // Started right after `run -d`: `b` is written a second after it started following.
    let id = env.run_detached(&[IMAGE, "sh", "-c", "echo a; sleep 1; echo b >&2"]);
    let follow = env
        .cmd()
        .args(["logs", "-f", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(follow, 30, "logs -f");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "a\nb\n");
    assert_eq!(env.status(&id).as_deref(), Some("stopped"));
    // A stopped container's log is printed and the follow ends at once.
    let out = output_within(
        env.cmd()
            .args(["logs", "--follow", &id[..8]])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        10,
        "logs -f of a stopped container",
    );
    assert_eq!(stdout(&out), "a\nb\n", "{}", describe(&out));
    env.ok(&["rm", &id]);

    // Ctrl-C (SIGINT) ends a follow cleanly, with what was written so far printed.
    let id = env.run_detached(&[
        "--name",
        "ticker",
        IMAGE,
        "sh",
        "-c",
        "echo ready; while :; do sleep 0.2; echo tick; done",
    ]);
    let mut follow = env
        .cmd()
        .args(["logs", "-f", "ticker"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "tick\n", "output written after the follow started");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(follow.id() as i32, libc::SIGINT) }, 0);
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    let out = output_within(follow, 10, "logs -f after SIGINT");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    assert!(rest.lines().all(|l| l == "tick"), "{rest:?}");
    assert_eq!(env.status(&id).as_deref(), Some("running"));
    env.ok(&["rm", "-f", "ticker"]);
    assert_eq!(env.ok(&["ps", "-q"]), "");
}
