//! podman drives berth-runc as its OCI runtime (`podman --runtime`), through conmon, as it
//! drives runc: `run --rm`, `run -d` + `exec`, and `-it` under a pty harness (`script`). The
//! busybox image comes from the oci-archive fixture. Root lacks CAP_SYS_RESOURCE here, so
//! podman's default rlimits cannot be raised: `--ulimit` keeps them within the current hard
//! limits (runc needs the same). Root, podman, conmon, script and the fixture are required
//! (skipped with a reason outside CI, a failure under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "common/runc_podman.rs"]
mod runc_podman;
#[path = "common/runc_support.rs"]
mod runc_support;

use pty::run_under_pty;

use runc_podman::Podman;
use runc_support::{berth_runc, fixture, have_root, have_tool, unique};

const IMAGE: &str = "docker.io/anchors/busybox:latest";

/// The current hard limit of `resource` (what `--ulimit` may ask for without CAP_SYS_RESOURCE).
fn hard_limit(resource: nix::sys::resource::Resource) -> u64 {
    let (_, hard) = nix::sys::resource::getrlimit(resource).unwrap();
    hard.min(1 << 20)
}

/// `podman run` options every container here gets.
fn run_options() -> Vec<String> {
    use nix::sys::resource::Resource;
    let nofile = hard_limit(Resource::RLIMIT_NOFILE).min(4096);
    let nproc = hard_limit(Resource::RLIMIT_NPROC).min(4096);
    vec![
        "--pull".to_owned(),
        "never".to_owned(),
        "--network".to_owned(),
        "none".to_owned(),
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

fn ready() -> Option<std::path::PathBuf> {
    if !(have_root() && have_tool("podman") && have_tool("conmon") && have_tool("script")) {
        return None;
    }
    fixture("busybox.oci.tar")
}

fn with_options<'a>(head: &[&'a str], opts: &'a [String], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(opts.iter().map(String::as_str))
        .chain(tail.iter().copied())
        .collect()
}

#[test]
fn podman_runs_containers_through_berth_runc() {
    let Some(archive) = ready() else { return };
    let podman = Podman::new(&berth_runc());
    podman.ok(&["pull", &format!("oci-archive:{}", archive.display())]);
    let opts = run_options();

    // run --rm: the output comes back, the exit code too.
    let out = podman.ok(&with_options(
        &["run", "--rm"],
        &opts,
        &[IMAGE, "echo", "hi"],
    ));
    assert_eq!(out, "hi\n");
    let out = podman.run(&with_options(
        &["run", "--rm"],
        &opts,
        &[IMAGE, "sh", "-c", "exit 9"],
    ));
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // run -d, then exec into it.
    let name = unique("pod-exec");
    podman.ok(&with_options(
        &["run", "-d", "--name", &name],
        &opts,
        &[IMAGE, "sleep", "1000"],
    ));
    let out = podman.run(&["exec", &name, "sh", "-c", "echo from-exec; exit 3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-exec\n");
    assert_eq!(out.status.code(), Some(3));
    let top = podman.ok(&["exec", &name, "ps", "-o", "pid,args"]);
    assert!(
        top.lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("sleep 1000")),
        "{top}"
    );
    let state = podman.ok(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(state.trim(), "running");

    // -it under a pty harness: exec and run.
    let cmd = format!(
        "{} exec -it {name} sh -c 'tty; exit 4'",
        podman.shell_words()
    );
    let out = run_under_pty(&cmd, 60);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    podman.ok(&["rm", "--force", "--time", "0", &name]);

    // run -it, several times: the process prints and exits at once, so a race in the terminal
    // path shows. (With stdin input pending when the container exits, podman 4.3 loses that
    // output, with runc as with berth-runc: see common/pty.rs, whose harness types nothing.)
    let quoted: Vec<String> = opts.iter().map(|o| format!("'{o}'")).collect();
    let cmd = format!(
        "{} run -it --rm {} {IMAGE} sh -c 'tty; exit 5'",
        podman.shell_words(),
        quoted.join(" ")
    );
    for round in 0..5 {
        let out = run_under_pty(&cmd, 60);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
            "round {round}: {out:?}"
        );
        assert_eq!(out.status.code(), Some(5), "round {round}: {out:?}");
    }
}
