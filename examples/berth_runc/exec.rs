//! `exec`: run another process in a container.
//!
//! The process comes from `--process <process.json>` (what containerd's shim and conmon pass),
//! or is built as runc builds it: the container's own `process` from its stored spec, with the
//! command after the id as `args` and the options applied on top (`--cwd`, `--env` appended,
//! `--tty`, `--user uid[:gid]`, `--additional-gids`, `--cap` added to the bounding, effective
//! and permitted sets, `--no-new-privs`, `--apparmor`, `--process-label`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use berth_runtime::ExecOptions;
use berth_runtime::oci_spec::runtime::Process;
use serde_json::{Value, json};

use crate::cli::ExecArgs;
use crate::foreground::{self, ConsoleListener};
use crate::lifecycle::{container_stdio, preserved_fds, runtime, runtime_error};

/// `exec`: detached, it returns once the process runs; in the foreground it waits and exits
/// with the process's status.
pub fn exec(root: &Path, args: &ExecArgs) -> Result<ExitCode> {
    let rt = runtime(root)?;
    let process = match &args.process {
        Some(path) => {
            let data =
                std::fs::read(path).with_context(|| format!("read process {}", path.display()))?;
            serde_json::from_slice::<Process>(&data)
                .with_context(|| format!("parse process {}", path.display()))?
        }
        None => {
            let spec = rt.spec(&args.id).map_err(|e| runtime_error(e, "exec"))?;
            let base = match spec.process() {
                Some(p) => serde_json::to_value(p)?,
                None => json!({ "cwd": "/", "user": { "uid": 0, "gid": 0 } }),
            };
            serde_json::from_value(build_process(base, args)?).context("build the process")?
        }
    };
    let terminal = process.terminal().unwrap_or(false);
    // A foreground terminal starts at our terminal's size (the process runs before we could
    // resize the pty ourselves).
    let process = match (
        terminal && args.console_socket.is_none(),
        foreground::window_size(),
    ) {
        (true, Some((rows, cols))) if process.console_size().is_none() => {
            let mut v = serde_json::to_value(&process)?;
            v["consoleSize"] = json!({ "height": rows, "width": cols });
            serde_json::from_value(v).context("set the console size")?
        }
        _ => process,
    };
    if terminal && args.detach && args.console_socket.is_none() {
        bail!("cannot allocate tty if berth-runc will detach without setting console socket");
    }
    let console = if terminal && args.console_socket.is_none() {
        Some(ConsoleListener::new(root, &args.id)?)
    } else {
        None
    };
    let [stdin, stdout, stderr] = container_stdio(terminal);
    let options = ExecOptions {
        stdin,
        stdout,
        stderr,
        preserve_fds: preserved_fds(args.preserve_fds)?,
        console_socket: console
            .as_ref()
            .map(|c| c.path().to_path_buf())
            .or_else(|| args.console_socket.clone()),
        pid_file: args.pid_file.clone(),
    };
    if !args.detach {
        foreground::catch_signals();
    }
    let child = rt
        .exec(&args.id, &process, options)
        .map_err(|e| runtime_error(e, "exec"))?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let master = match &console {
        Some(listener) => Some(foreground::Terminal::attach(listener.receive_master()?)),
        None => None,
    };
    drop(console);
    let status = foreground::wait(&child, master)?;
    Ok(ExitCode::from(
        u8::try_from(status.code() & 0xff).unwrap_or(1),
    ))
}

/// Applies the command line of `exec` to `base` (a process as JSON).
fn build_process(mut base: Value, args: &ExecArgs) -> Result<Value> {
    if args.command.is_empty() {
        bail!("exec args cannot be empty");
    }
    let Some(p) = base.as_object_mut() else {
        bail!("the container's process is not an object")
    };
    p.insert("args".into(), json!(args.command));
    p.insert("terminal".into(), json!(args.tty));
    p.remove("consoleSize");
    if let Some(cwd) = &args.cwd {
        p.insert("cwd".into(), json!(cwd));
    }
    if !args.env.is_empty() {
        let env = p.entry("env").or_insert_with(|| json!([]));
        if let Some(list) = env.as_array_mut() {
            list.extend(args.env.iter().map(|e| json!(e)));
        }
    }
    let user = p
        .entry("user")
        .or_insert_with(|| json!({ "uid": 0, "gid": 0 }));
    if let Some(spec) = &args.user {
        let (uid, gid) = parse_user(spec)?;
        user["uid"] = json!(uid);
        if let Some(gid) = gid {
            user["gid"] = json!(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        user["additionalGids"] = json!(args.additional_gids);
    }
    if !args.cap.is_empty() {
        let caps = p.entry("capabilities").or_insert_with(|| json!({}));
        for set in ["bounding", "effective", "permitted"] {
            let list = caps
                .as_object_mut()
                .map(|c| c.entry(set).or_insert_with(|| json!([])));
            if let Some(Value::Array(list)) = list {
                for cap in &args.cap {
                    let name = normalise_cap(cap);
                    if !list.iter().any(|c| c == name.as_str()) {
                        list.push(json!(name));
                    }
                }
            }
        }
    }
    if args.no_new_privs {
        p.insert("noNewPrivileges".into(), json!(true));
    }
    if let Some(profile) = &args.apparmor {
        p.insert("apparmorProfile".into(), json!(profile));
    }
    if let Some(label) = &args.process_label {
        p.insert("selinuxLabel".into(), json!(label));
    }
    Ok(base)
}

/// `CAP_SYS_ADMIN`, `sys_admin` and `SYS_ADMIN` all name the same capability.
fn normalise_cap(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// `uid[:gid]` (numbers only, as runc accepts).
fn parse_user(spec: &str) -> Result<(u32, Option<u32>)> {
    let (uid, gid) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = uid
        .parse()
        .with_context(|| format!("parsing {spec} as uid[:gid]"))?;
    let gid = gid
        .map(|g| {
            g.parse()
                .with_context(|| format!("parsing {spec} as uid[:gid]"))
        })
        .transpose()?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn exec_args(argv: &[&str]) -> ExecArgs {
        let argv = std::iter::once("berth-runc")
            .chain(["exec"])
            .chain(argv.iter().copied());
        let argv = crate::cli::normalise_argv(argv.map(Into::into).collect());
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            Some(crate::cli::Command::Exec(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn builds_on_the_containers_process() {
        let base = json!({
            "args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": { "uid": 0, "gid": 0 },
            "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"] }
        });
        let args = exec_args(&[
            "-e",
            "A=1",
            "--cwd",
            "/tmp",
            "-u",
            "1000:1001",
            "--cap",
            "sys_admin",
            "-g",
            "7",
            "--no-new-privs",
            "c1",
            "ls",
            "-l",
        ]);
        let p = build_process(base, &args).unwrap();
        let p: Process = serde_json::from_value(p).unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["ls", "-l"]);
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.env().as_ref().unwrap(), &["PATH=/bin", "A=1"]);
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 1001);
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[7]);
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = serde_json::to_value(p.capabilities()).unwrap();
        assert!(
            caps["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "CAP_SYS_ADMIN")
        );
        assert!(
            caps["permitted"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "CAP_SYS_ADMIN")
        );
    }

    #[test]
    fn refuses_an_empty_command_and_bad_users() {
        let args = exec_args(&["c1"]);
        assert!(build_process(json!({}), &args).is_err());
        assert!(parse_user("root").is_err());
        assert_eq!(parse_user("5").unwrap(), (5, None));
    }
}
