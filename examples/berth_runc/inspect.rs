//! `state`, `list` and `ps`: reading containers, in runc's output formats.
//!
//! `state` prints what runc prints (the OCI state plus `rootfs`, `created` in RFC 3339 with
//! nanoseconds, and `owner`): containerd decodes `created` as a time, so it is always present.
//! `list` prints a table (`ID PID STATUS BUNDLE CREATED OWNER`), JSON, or only ids (`-q`).
//! `ps --format json` prints the container's pids as a JSON array (containerd's `pids` call);
//! the table is `ps -ef` filtered to the container's processes, as runc does.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use berth_runtime::{ContainerState, Status};
use serde_json::{Value, json};

use crate::cli::{ListArgs, PsArgs, TableFormat};
use crate::lifecycle::{runtime, runtime_error};
use crate::log::rfc3339;

/// runc's JSON view of one container.
pub fn state_json(st: &ContainerState, owner: &str) -> Value {
    let pid = match st.status {
        Status::Stopped => 0,
        _ => st.pid.unwrap_or(0),
    };
    let mut v = json!({
        "ociVersion": st.oci_version,
        "id": st.id,
        "pid": pid,
        "status": st.status.as_str(),
        "bundle": st.bundle,
        "rootfs": st.rootfs,
        "created": rfc3339(UNIX_EPOCH + Duration::from_secs(st.created), true),
        "owner": owner,
    });
    if !st.annotations.is_empty() {
        v["annotations"] = json!(st.annotations);
    }
    v
}

/// The user owning the container's state directory (runc reports the same).
fn owner_of(root: &Path, id: &str) -> String {
    let Ok(meta) = std::fs::metadata(root.join(id)) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(meta.uid().into()) {
        Ok(Some(user)) => user.name,
        _ => format!("#{}", meta.uid()),
    }
}

/// `state`: the container's state as JSON.
pub fn state(root: &Path, id: &str) -> Result<()> {
    let st = runtime(root)?
        .state(id)
        .map_err(|e| runtime_error(e, "state"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&state_json(&st, &owner_of(root, id)))?
    );
    Ok(())
}

/// `list`: every container under the root.
pub fn list(root: &Path, args: &ListArgs) -> Result<()> {
    let rt = runtime(root)?;
    let mut states = Vec::new();
    for id in rt.list().map_err(|e| runtime_error(e, "list"))? {
        // A container deleted while we list is simply left out.
        if let Ok(st) = rt.state(&id) {
            states.push(st);
        }
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for st in &states {
            writeln!(out, "{}", st.id)?;
        }
        return Ok(());
    }
    match args.format {
        TableFormat::Json => {
            let all: Vec<Value> = states
                .iter()
                .map(|s| state_json(s, &owner_of(root, &s.id)))
                .collect();
            writeln!(out, "{}", serde_json::to_string(&all)?)?;
        }
        TableFormat::Table => {
            let mut rows =
                vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
            for st in &states {
                let v = state_json(st, &owner_of(root, &st.id));
                rows.push([
                    st.id.clone(),
                    v["pid"].to_string(),
                    st.status.as_str().to_owned(),
                    st.bundle.display().to_string(),
                    v["created"].as_str().unwrap_or_default().to_owned(),
                    v["owner"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            write_table(&mut out, &rows)?;
        }
    }
    Ok(())
}

/// Writes rows as columns separated by at least one space (Go tabwriter style).
fn write_table(out: &mut impl Write, rows: &[[String; 6]]) -> Result<()> {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `ps`: the container's processes.
pub fn ps(root: &Path, args: &PsArgs) -> Result<()> {
    let pids = runtime(root)?
        .pids(&args.id)
        .map_err(|e| runtime_error(e, "ps"))?;
    if args.format == TableFormat::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let ps_args: Vec<&str> = if args.ps_args.is_empty() {
        vec!["-ef"]
    } else {
        args.ps_args.iter().map(String::as_str).collect()
    };
    let output = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .context("run ps")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(pid_col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("couldn't find PID field in ps output");
    };
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn state_json_has_what_containerd_decodes() {
        let st = ContainerState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            status: Status::Stopped,
            pid: Some(42),
            pid_start_time: Some(1),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            annotations: BTreeMap::from([("a".into(), "b".into())]),
            created: 1_795_671_672,
            cgroup_path: "/berth/c1".into(),
            user_ns: false,
        };
        let v = state_json(&st, "root");
        assert_eq!(v["pid"], 0, "a stopped container reports pid 0");
        assert_eq!(v["status"], "stopped");
        assert_eq!(v["created"], "2026-11-26T05:41:12Z");
        assert_eq!(v["annotations"]["a"], "b");
        assert_eq!(v["rootfs"], "/b/rootfs");
    }

    #[test]
    fn table_is_aligned() {
        let rows = [
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
            ["long-id", "1", "running", "/b", "t", "root"].map(String::from),
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("PID"), lines[1].find('1'));
    }
}
