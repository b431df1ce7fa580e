//! berth-runc's command line, driven as containerd's shim, conmon and people drive runc: one
//! process per step on busybox bundles built from the host's /bin/busybox. Root only (skips
//! with a reason outside CI, fails under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "common/runc_support.rs"]
mod runc_support;

use pty::run_under_pty;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_json::Value;

use runc_support::{Bundle, StateRoot, have_busybox, have_root, have_tool, unique};

fn ready() -> bool {
    have_root() && have_busybox()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_in_cgroup(pid: i64, controller: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("{controller} not in /proc/{pid}/cgroup: {text}"))
}

#[test]
fn create_start_state_exec_pause_kill_delete() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("cli-life");
    let pid_file = bundle.path().join("init.pid");

    // Options after the id, as runc's parser allows.
    root.ok(&[
        "create",
        &id,
        "--bundle",
        bundle.arg(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st = root.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["pid"], pid);
    assert_eq!(
        st["bundle"],
        bundle.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert!(st["created"].as_str().unwrap().ends_with('Z'), "{st}");
    assert!(root.ok(&["list", "-q"]).lines().any(|l| l == id));

    root.ok(&["start", &id]);
    root.wait_status(&id, "running");
    let pids: Vec<i64> = serde_json::from_str(&root.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "{pids:?} lacks init {pid}");
    let table = root.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(table.contains("sleep 1000"), "{table}");

    // exec: output, exit status, the command's own options, the container's view.
    let out = root.run(&["exec", &id, "sh", "-c", "echo in-$(hostname); exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout_of(&out).trim(), "in-berth");
    let out = root.ok(&[
        "exec",
        "--env",
        "X=y",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $X $(pwd)",
    ]);
    assert_eq!(out.trim(), "y /tmp");
    let out = root.ok(&["exec", &id, "ls", "-d", "/proc/1"]);
    assert_eq!(out.trim(), "/proc/1");
    let ps = root.ok(&["exec", &id, "ps", "-o", "pid,args"]);
    assert!(
        ps.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{ps}"
    );
    let out = root.ok(&["exec", "-u", "1000:1000", &id, "id"]);
    assert!(
        out.contains("uid=1000") && out.contains("gid=1000"),
        "{out}"
    );

    root.ok(&["pause", &id]);
    assert_eq!(root.state(&id)["status"], "paused");
    root.ok(&["resume", &id]);
    assert_eq!(root.state(&id)["status"], "running");

    // A running container is not deleted without --force.
    let out = root.run(&["delete", &id]);
    assert_eq!(out.status.code(), Some(1));
    root.ok(&["kill", &id, "KILL"]);
    root.wait_status(&id, "stopped");
    assert_eq!(root.state(&id)["pid"], 0);
    let out = root.run(&["kill", &id, "TERM"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container not running"));
    root.ok(&["delete", &id]);
    let out = root.run(&["state", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!root.path().join(&id).exists(), "state dir left behind");
}

#[test]
fn run_foreground_exits_with_the_status_and_cleans_up() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sh", "-c", "echo out; echo err >&2; exit 3"], false);
    let id = unique("cli-run");
    let out = root.run(&["run", "--bundle", bundle.arg(), &id]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_of(&out), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    assert!(
        !root.ok(&["list", "-q"]).lines().any(|l| l == id),
        "run left the container"
    );
}

#[test]
fn run_forwards_signals_to_the_container() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let script = "trap 'exit 42' USR1; echo ready; while true; do sleep 0.05; done";
    let bundle = Bundle::busybox(&["sh", "-c", script], false);
    let id = unique("cli-sig");
    let mut child = root
        .cmd(&["run", "-b", bundle.arg(), &id])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"ready\n");
    // `kill` takes names in any case, with or without SIG.
    root.ok(&["kill", &id, "usr1"]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));

    let mut child = root
        .cmd(&["run", "-b", bundle.arg(), &id])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    // A signal to `run` itself reaches the container.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn detached_run_delete_force_and_kill_all() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sh", "-c", "sleep 1000 & sleep 1000"], false);
    let id = unique("cli-detach");
    root.ok(&["run", "-d", "--bundle", bundle.arg(), &id]);
    root.wait_status(&id, "running");
    let pids: Vec<i64> = serde_json::from_str(&root.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(pids.len() >= 2, "{pids:?}");
    root.ok(&["kill", "--all", &id, "9"]);
    root.wait_status(&id, "stopped");
    root.ok(&["delete", &id]);

    root.ok(&["run", "--detach", "--bundle", bundle.arg(), &id]);
    root.ok(&["delete", "--force", &id]);
    assert!(!root.ok(&["list", "-q"]).lines().any(|l| l == id));
    // --force on a container that is gone succeeds, as with runc.
    root.ok(&["delete", "-f", &id]);
    assert_eq!(root.run(&["delete", &id]).status.code(), Some(1));
}

#[test]
fn errors_go_to_the_log_in_the_requested_format() {
    if !have_root() {
        return;
    }
    let root = StateRoot::new();
    let log = root.path().join("log.json");
    let out = root.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nosuch",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("does not exist"),
        "{last}"
    );
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
    // And, as runc, the bare message on stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let log = root.path().join("log.txt");
    let out = root.run(&[
        "--log",
        log.to_str().unwrap(),
        "kill",
        "nosuch",
        "NOTASIGNAL",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("time=\"") && text.contains("level=error msg="),
        "{text}"
    );

    let out = root.run(&["--systemd-cgroup", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd"));
}

#[test]
fn list_formats() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let (a, b) = (unique("cli-list-a"), unique("cli-list-b"));
    root.ok(&["create", "-b", bundle.arg(), &a]);
    root.ok(&["create", "-b", bundle.arg(), &b]);
    let all: Vec<Value> = serde_json::from_str(&root.ok(&["list", "--format", "json"])).unwrap();
    let ids: Vec<&str> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{ids:?}"
    );
    assert!(all.iter().all(|c| c["status"] == "created"));
    let table = root.ok(&["list"]);
    let header = table.lines().next().unwrap();
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&a) && l.contains("created")),
        "{table}"
    );
    let mut quiet: Vec<String> = root.ok(&["list", "-q"]).lines().map(String::from).collect();
    quiet.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(quiet, want);
    root.ok(&["delete", &a]);
    root.ok(&["delete", &b]);
}

#[test]
fn update_changes_the_cgroup_limits() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("cli-update");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    let pid = root.state(&id)["pid"].as_i64().unwrap();
    root.ok(&["update", "--memory", "64m", "--pids-limit", "50", &id]);
    let mem = pid_in_cgroup(pid, "memory");
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes"));
    if let Ok(limit) = limit {
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    }
    let pids = pid_in_cgroup(pid, "pids");
    if let Ok(max) = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{pids}/pids.max")) {
        assert_eq!(max.trim(), "50");
    }
    // Resources from stdin, as containerd's shim sends them.
    let mut child = root
        .cmd(&["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"pids":{"limit":77}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(max) = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{pids}/pids.max")) {
        assert_eq!(max.trim(), "77");
    }
    let stats: Value = serde_json::from_str(&root.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["id"], id.as_str());
    assert!(stats["data"].is_object(), "{stats}");
    root.ok(&["delete", "--force", &id]);
}

/// Receives the fd sent with SCM_RIGHTS on a console socket connection.
fn receive_master(listener: &UnixListener) -> OwnedFd {
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    for cmsg in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the fd was just received and is owned by nobody else.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd on the console socket");
}

#[test]
fn console_socket_gets_the_pty_master() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sh", "-c", "tty; echo hi-from-pty"], true);
    let id = unique("cli-console");
    let sock = root.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    root.ok(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "-b",
        bundle.arg(),
        &id,
    ]);
    let master = receive_master(&listener);
    root.ok(&["start", &id]);
    let mut text = String::new();
    let mut file = std::fs::File::from(master);
    let mut buf = [0u8; 512];
    // Read until the slave side closes (EIO) or both lines are in.
    while !text.contains("hi-from-pty") {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("hi-from-pty"), "{text:?}");
    root.wait_status(&id, "stopped");
    root.ok(&["delete", &id]);
}

#[test]
fn terminal_under_a_pty_harness() {
    if !ready() || !have_tool("script") {
        return;
    }
    let root = StateRoot::new();
    // Foreground run with a terminal: berth-runc receives the pty and proxies it.
    let bundle = Bundle::busybox(&["sh", "-c", "tty; stty size"], true);
    let id = unique("cli-tty");
    let cmd = format!(
        "stty rows 33 cols 99; {} --root {} run -b {} {id}",
        root.bin.display(),
        root.path().display(),
        bundle.arg()
    );
    let out = run_under_pty(&cmd, 60);
    let text = stdout_of(&out);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("33 99"), "window size not copied: {text:?}");

    // exec -t into a running container.
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("cli-exec-tty");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    let cmd = format!(
        "stty rows 21 cols 77; {} --root {} exec -t {id} sh -c 'tty; stty size; exit 6'",
        root.bin.display(),
        root.path().display()
    );
    let out = run_under_pty(&cmd, 60);
    let text = stdout_of(&out);
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("21 77"), "window size not given: {text:?}");
    assert_eq!(out.status.code(), Some(6), "{text:?}");
    root.ok(&["delete", "-f", &id]);
}

/// The pty harness types nothing (see common/pty.rs): a raw-mode reader of the terminal gets
/// no byte within a second. (`script` with its stdin at end of file types ^D, which podman
/// forwarded into the container and which made it lose `run -it` output.)
#[test]
fn pty_harness_types_nothing() {
    if !have_tool("script") {
        return;
    }
    let line = "stty raw -echo; timeout --foreground 1 dd bs=1 count=1 2>/dev/null | od -An -c; \
                stty sane; echo read-done";
    let out = run_under_pty(line, 30);
    let text = stdout_of(&out);
    assert!(text.contains("read-done"), "{text:?}");
    assert!(!text.contains("004"), "the harness typed ^D: {text:?}");
    assert_eq!(
        text.trim(),
        "read-done",
        "the harness typed something: {text:?}"
    );
}

#[test]
fn exec_with_a_process_file_detached() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("cli-exec-p");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo from-process-json > /tmp/marker; sleep 1000"],
        "cwd": "/", "env": ["PATH=/bin"], "user": { "uid": 0, "gid": 0 }
    });
    let pfile = bundle.path().join("process.json");
    std::fs::write(&pfile, process.to_string()).unwrap();
    let pid_file = bundle.path().join("exec.pid");
    root.ok(&[
        "exec",
        "--process",
        pfile.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let exec_pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut seen = false;
    for _ in 0..200 {
        let out = root.run(&["exec", &id, "cat", "/tmp/marker"]);
        if stdout_of(&out).trim() == "from-process-json" {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen, "the detached process never ran");
    let pids: Vec<i64> = serde_json::from_str(&root.ok(&["ps", "--format=json", &id])).unwrap();
    assert!(pids.contains(&exec_pid), "{pids:?} lacks {exec_pid}");
    root.ok(&["delete", "--force", &id]);
}

#[test]
fn spec_features_and_version() {
    if !have_root() {
        return;
    }
    let root = StateRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().to_str().unwrap();
    root.ok(&["spec", "--bundle", bundle]);
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec.root().as_ref().unwrap().path().to_str(),
        Some("rootfs")
    );
    assert_eq!(
        root.run(&["spec", "-b", bundle]).status.code(),
        Some(1),
        "spec overwrote"
    );
    let rootless = tempfile::tempdir().unwrap();
    root.ok(&[
        "spec",
        "--rootless",
        "--bundle",
        rootless.path().to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(rootless.path().join("config.json")).unwrap();
    assert!(text.contains("uidMappings"), "{text}");

    let features: Value = serde_json::from_str(&root.ok(&["features"])).unwrap();
    assert_eq!(features["ociVersionMin"], "1.0.0");
    assert!(
        features["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "createRuntime")
    );
    assert!(
        features["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "user")
    );
    let version = root.ok(&["--version"]);
    assert!(version.starts_with("berth-runc version"), "{version}");
}

#[test]
fn preserved_fds_reach_the_container() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sh", "-c", "echo through-fd3 >&3"], false);
    let id = unique("cli-fds");
    let (mut reader, writer) = std::io::pipe().unwrap();
    let writer_fd = OwnedFd::from(writer);
    let raw = writer_fd.as_raw_fd();
    let mut cmd = root.cmd(&["run", "--preserve-fds", "1", "-b", bundle.arg(), &id]);
    // SAFETY: dup2 is async-signal-safe; the fd is open in the parent and inherited.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.stdin(Stdio::null()).status().unwrap();
    drop(writer_fd);
    assert!(status.success());
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through-fd3\n");
}

#[test]
fn hooks_get_the_state_on_stdin() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["true"], false);
    let out_dir = tempfile::tempdir().unwrap();
    let hook = |name: &str| {
        let file = out_dir.path().join(format!("{name}.json"));
        serde_json::json!({ "path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", file.display())] })
    };
    bundle.edit(|c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    let id = unique("cli-hooks");
    root.ok(&["run", "-b", bundle.arg(), &id]);
    for (name, status) in [
        ("createRuntime", "creating"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = std::fs::read_to_string(out_dir.path().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name} hook did not run: {e}"));
        let state: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["id"], id.as_str(), "{name}: {state}");
        assert_eq!(state["status"], status, "{name}: {state}");
    }
}

#[test]
fn events_stream_until_the_container_stops() {
    if !ready() {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("cli-events");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut events = root
        .cmd(&["events", "--interval", "50ms", &id])
        .stdin(Stdio::null())
        .stdout(out_file.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    root.ok(&["kill", &id, "KILL"]);
    root.wait_status(&id, "stopped");
    let status = events.wait().unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(out_file.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines
            .iter()
            .all(|e| e["type"] == "stats" && e["id"] == id.as_str())
    );
    root.ok(&["delete", &id]);
}
