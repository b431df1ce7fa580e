//! containerd 1.6 drives berth-runc as its runtime binary (`ctr run --runc-binary`): through
//! containerd-shim-runc-v2, exactly as it drives runc. A private containerd (own root, state and
//! socket in a temp dir) imports the busybox fixture and runs it. Root, containerd, ctr and the
//! fixture are required (skipped with a reason outside CI, a failure under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "common/runc_containerd.rs"]
mod runc_containerd;
#[path = "common/runc_support.rs"]
mod runc_support;

use std::time::{Duration, Instant};

use pty::run_under_pty;
use runc_containerd::Containerd;
use runc_support::{berth_runc, fixture, have_root, have_tool, unique};

const IMAGE: &str = "docker.io/anchors/busybox:latest";

fn ready() -> Option<std::path::PathBuf> {
    if !(have_root() && have_tool("containerd") && have_tool("ctr")) {
        return None;
    }
    if !have_tool("containerd-shim-runc-v2") || !have_tool("script") {
        return None;
    }
    fixture("busybox.oci.tar")
}

fn task_status(ctd: &Containerd, id: &str) -> Option<String> {
    let out = ctd.ctr_ok(&["task", "ls"]);
    out.lines()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(String::from))
}

#[test]
fn containerd_runs_tasks_through_berth_runc() {
    let Some(archive) = ready() else { return };
    let bin = berth_runc();
    let bin = bin.to_str().unwrap();
    let ctd = Containerd::start(&unique("berthrc"));
    ctd.ctr_ok(&["images", "import", archive.to_str().unwrap()]);

    // A one-shot task: output and exit code come back through the shim.
    let id = unique("ctd-once");
    let out = ctd.ctr(&[
        "run",
        "--runc-binary",
        bin,
        "--rm",
        IMAGE,
        &id,
        "sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "stderr: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctd.log()
    );
    assert_eq!(out.status.code(), Some(7));

    // A terminal task under a pty harness: the shim gets the pty master over its console
    // socket and proxies it.
    let ctr = format!("ctr -a {} -n {}", ctd.socket().display(), ctd.namespace);
    let id = unique("ctd-tty");
    let cmd = format!("{ctr} run -t --rm --runc-binary {bin} {IMAGE} {id} sh -c 'tty; exit 3'");
    let out = run_under_pty(&cmd, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text:?}\n{}", ctd.log());
    assert_eq!(out.status.code(), Some(3), "{text:?}");

    // A long-running task: exec, metrics, ps, pause/resume, kill.
    let id = unique("ctd-long");
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        bin,
        IMAGE,
        &id,
        "sleep",
        "1000",
    ]);
    assert_eq!(task_status(&ctd, &id).as_deref(), Some("RUNNING"));
    // The shim's runc root holds berth-runc's state of the container.
    assert!(ctd.shim_runc_root().join(&id).join("state.json").is_file());

    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo from-exec; exit 5",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-exec\n");
    assert_eq!(out.status.code(), Some(5));

    let cmd = format!("{ctr} task exec -t --exec-id e2 {id} sh -c 'tty; exit 4'");
    let out = run_under_pty(&cmd, 60);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let metrics = ctd.ctr_ok(&["task", "metrics", &id]);
    assert!(
        metrics.contains("memory.usage_in_bytes") || metrics.contains("memory.usage"),
        "{metrics}"
    );
    assert!(metrics.contains("pids.current"), "{metrics}");

    let ps = ctd.ctr_ok(&["task", "ps", &id]);
    assert!(ps.lines().count() >= 2, "{ps}");

    ctd.ctr_ok(&["task", "pause", &id]);
    assert_eq!(task_status(&ctd, &id).as_deref(), Some("PAUSED"));
    ctd.ctr_ok(&["task", "resume", &id]);
    assert_eq!(task_status(&ctd, &id).as_deref(), Some("RUNNING"));

    // sleep as pid 1 ignores SIGTERM (no handler); SIGKILL ends it.
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_status(&ctd, &id).as_deref() != Some("STOPPED") {
        assert!(
            Instant::now() < deadline,
            "task never stopped: {:?}",
            task_status(&ctd, &id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ctd.ctr_ok(&["task", "rm", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    assert!(
        !ctd.shim_runc_root().join(&id).exists(),
        "berth-runc state left behind"
    );
}
