//! One process per lifecycle step, as a runc-style CLI drives the runtime:
//! `create` runs in a child process that exits, and a different process
//! starts, inspects, kills and deletes the container. Also the sealed
//! re-exec of `seal_self_exe` (CVE-2019-5736) and the non-dumpable setup.
//!
//! The helpers are this test binary re-executed with an environment
//! variable set; without it they do nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    clippy::exit,
    missing_docs
)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_runtime::{CreateOptions, ErrorKind, Runtime, Status, Stdio};
use common::helper::helper_command;
use common::*;

const HELPER_CREATE: &str = "BERTH_TEST_HELPER_CREATE";
const HELPER_SEAL: &str = "BERTH_TEST_HELPER_SEAL";

/// Helper: `create` a container (root, id, bundle from the environment) and exit.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_create_then_exit() {
    let Ok(spec) = std::env::var(HELPER_CREATE) else {
        return;
    };
    let mut it = spec.split('\n');
    let (root, id, bundle) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let rt = Runtime::new(root).unwrap();
    let code = match rt.create(
        id,
        &PathBuf::from(bundle),
        CreateOptions {
            stdin: Stdio::Null,
            stdout: Stdio::Null,
            stderr: Stdio::Null,
            ..Default::default()
        },
    ) {
        Ok(p) => {
            println!("PID={}", p.pid());
            0
        }
        Err(e) => {
            println!("ERR={e}");
            1
        }
    };
    // Leave at once, as a CLI `create` would: the init is reparented.
    std::process::exit(code);
}

/// Helper: re-exec from a sealed memfd, then report whether we run sealed.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_seal_self_exe() {
    if std::env::var_os(HELPER_SEAL).is_none() {
        return;
    }
    berth_runtime::seal::seal_self_exe().unwrap();
    std::process::exit(if berth_runtime::seal::is_sealed() {
        42
    } else {
        1
    });
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn each_step_in_its_own_process() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("cli");
    let cg = unique("cg");
    let bundle = env.bundle(&id, &spec(&["sleep", "1000"], &cg));
    // Stand in for a shim/supervisor: orphaned inits are reparented to us
    // (not to pid 1, which may not reap), so nothing is left as a zombie.
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    let out = helper_command("helper_create_then_exit")
        .env(
            HELPER_CREATE,
            format!(
                "{}\n{id}\n{}",
                env.runtime.root().display(),
                bundle.display()
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "create helper failed: {stdout}");
    // The test harness prints its own text around ours: find the marker.
    let pid: i32 = stdout
        .split("PID=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pid in {stdout}"))
        .parse()
        .unwrap();

    // A fresh runtime in this (different) process drives the rest.
    let rt = Runtime::new(env.runtime.root()).unwrap();
    let st = rt.state(&id).unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(st.pid, Some(pid));
    // The init outlived its creator and was reparented to us, the subreaper.
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = ppid
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, std::process::id() as i32);

    rt.start(&id).unwrap();
    assert_eq!(rt.state(&id).unwrap().status, Status::Running);
    wait_for("sleep to exec", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    rt.kill(&id, libc::SIGKILL, false).unwrap();
    wait_for("stopped", || {
        rt.state(&id).unwrap().status == Status::Stopped
    });
    let mut wst = 0;
    // SAFETY: reaping the reparented init.
    assert_eq!(unsafe { libc::waitpid(pid, &mut wst, 0) }, pid);
    assert!(libc::WIFSIGNALED(wst) && libc::WTERMSIG(wst) == libc::SIGKILL);
    rt.delete(&id, false).unwrap();
    assert_eq!(rt.state(&id).unwrap_err().kind(), ErrorKind::NotFound);
    assert_no_cgroup(&cg);
}

#[test]
fn setup_is_not_dumpable_until_exec() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let linux = userns_linux(&unique("cg"), 400_000);
    let id = env.id("dumpable");
    let bundle = env.bundle(
        &id,
        &spec_builder(&["sleep", "1000"], &unique("cg"))
            .linux(linux)
            .build()
            .unwrap(),
    );
    let init = env.create(&id, &bundle);
    let owner = || {
        std::fs::metadata(format!("/proc/{}/environ", init.pid()))
            .unwrap()
            .uid()
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("400000")),
        "{status}"
    );
    // Waiting for start: non-dumpable, so its /proc files belong to root,
    // not to its own (mapped) uid; nothing in the container can ptrace it.
    assert_eq!(owner(), 0);
    env.runtime.start(&id).unwrap();
    wait_for("exec", || owner() == 400000);
    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
}

#[test]
fn seal_self_exe_reexecs_from_a_sealed_memfd() {
    let st = helper_command("helper_seal_self_exe")
        .env(HELPER_SEAL, "1")
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(42),
        "the re-executed helper did not run sealed"
    );
}
