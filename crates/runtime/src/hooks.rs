//! OCI hooks: run a program with the container's state JSON on stdin.
//!
//! Hooks run in the runtime's namespaces (createRuntime, prestart,
//! createContainer — the latter two are run by the runtime at the same
//! point, before `pivot_root`, while the container's init waits), after
//! start (poststart) and after delete (poststop). A hook's `timeout` (in
//! seconds) kills it when exceeded. `args[0]` is passed as `argv[0]`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::ContainerState;

/// Runs `hooks` in order, stopping at the first failure.
pub(crate) fn run_all(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &ContainerState,
) -> Result<()> {
    for h in hooks.into_iter().flatten() {
        run(kind, h, state)?;
    }
    Ok(())
}

/// Runs `hooks`, logging failures and going on (poststart, poststop).
pub(crate) fn run_all_logged(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &ContainerState,
) {
    for h in hooks.into_iter().flatten() {
        if let Err(err) = run(kind, h, state) {
            tracing::warn!(%err, hook = kind, "hook failed");
        }
    }
}

fn run(kind: &'static str, hook: &Hook, state: &ContainerState) -> Result<()> {
    let path = hook.path();
    let fail = |reason: String| Error::Hook {
        hook: kind,
        path: path.clone(),
        reason,
    };
    let json = serde_json::to_vec(&state.to_oci()).map_err(|e| fail(format!("state JSON: {e}")))?;
    let mut cmd = Command::new(path);
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first);
        cmd.args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine (EPIPE ignored).
        let _ = stdin.write_all(&json);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    match wait_until(&mut child, deadline).map_err(|e| fail(format!("wait: {e}")))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => {
            let mut stderr = String::new();
            if let Some(mut s) = child.stderr.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut stderr);
            }
            Err(fail(format!("{status}: {}", stderr.trim())))
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )))
        }
    }
}

/// Waits for `child` to exit, until `deadline` if one is given: `None` when
/// it still runs then. Blocks in `waitpid`, or with a deadline in `poll` on
/// a pidfd (readable once the process exits), never in a sleep loop; a
/// kernel without pidfds (before 5.3) falls back to checking every 2 ms.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Option<Instant>,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(deadline) = deadline else {
        return child.wait().map(Some);
    };
    // SAFETY: pidfd_open with plain integers; the child is not reaped yet,
    // so its pid cannot have been reused.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a fresh fd we own.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(pidfd) => {
                use std::os::fd::AsRawFd;
                let mut pfd = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: pfd is a valid pollfd array of length 1. EINTR
                // and timeouts loop back to the checks above.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            None => std::thread::sleep(left.min(Duration::from_millis(2))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;
    use std::collections::BTreeMap;

    fn state() -> ContainerState {
        ContainerState {
            oci_version: crate::state::OCI_VERSION.into(),
            id: "hooked".into(),
            status: crate::Status::Created,
            pid: Some(1),
            pid_start_time: Some(1),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            annotations: BTreeMap::new(),
            created: 0,
            cgroup_path: "/berth/hooked".into(),
            user_ns: false,
        }
    }

    #[test]
    fn hook_gets_state_on_stdin_and_failures_and_timeouts_report() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {}", out.display()),
            ])
            .build()
            .unwrap();
        run_all("createRuntime", Some(&vec![h]), &state()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(v["id"], "hooked");
        assert_eq!(v["status"], "created");

        let bad = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                "echo nope >&2; exit 3".into(),
            ])
            .build()
            .unwrap();
        let e = run_all("prestart", Some(&vec![bad]), &state()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");

        let slow = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".into(), "30".into()])
            .timeout(1i64)
            .build()
            .unwrap();
        let e = run_all("poststart", Some(&vec![slow]), &state()).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");

        // With a timeout the wait goes through a pidfd: exit statuses and
        // stderr are reported the same way.
        let timed = |script: &str| {
            HookBuilder::default()
                .path("/bin/sh")
                .args(vec!["sh".into(), "-c".into(), script.into()])
                .timeout(30i64)
                .build()
                .unwrap()
        };
        run_all("poststop", Some(&vec![timed("sleep 0.1")]), &state()).unwrap();
        let e = run_all(
            "poststop",
            Some(&vec![timed("echo late >&2; exit 4")]),
            &state(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("late"), "{e}");
        assert!(!e.to_string().contains("timed out"), "{e}");
    }
}
