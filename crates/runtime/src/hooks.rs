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
    loop {
        match child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut stderr = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut stderr);
                }
                return Err(fail(format!("{status}: {}", stderr.trim())));
            }
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
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
    }
}
