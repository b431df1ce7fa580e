//! `pause`, `resume`, `update` and `events`: a container's cgroup.
//!
//! `update` takes a runtime-spec `LinuxResources` document (`--resources FILE`, or `-` for
//! stdin, which is how containerd's shim sends it) and/or the individual flags, which override
//! the document's fields. `events --stats` prints one statistics event and exits; without
//! `--stats` one event per `--interval` until the container stops, with an `oom` event whenever
//! the memory cgroup runs out of memory. Each event is
//! `{"type":"stats","id":...,"data":{...}}` with `data` in runc's statistics layout
//! ([`crate::stats`]), built from berth-metrics' cgroup figures.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_runtime::Status;
use berth_runtime::oci_spec::runtime::LinuxResources;
use serde_json::{Value, json};

use crate::cli::{EventsArgs, UpdateArgs};
use crate::lifecycle::{runtime, runtime_error};
use crate::log::{Level, log};
use crate::stats::{Event, Extra, Stats};

/// `pause`: freezes the container.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    runtime(root)?
        .pause(id)
        .map_err(|e| runtime_error(e, "pause"))
}

/// `resume`: thaws the container.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    runtime(root)?
        .resume(id)
        .map_err(|e| runtime_error(e, "resume"))
}

/// `update`: applies new limits.
pub fn update(root: &Path, args: &UpdateArgs) -> Result<()> {
    let resources = resources_from(args)?;
    runtime(root)?
        .update(&args.id, &resources)
        .map_err(|e| runtime_error(e, "update"))
}

/// Builds the resources of an `update` from `--resources` and the flags.
fn resources_from(args: &UpdateArgs) -> Result<LinuxResources> {
    let mut doc: Value = match args.resources.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read resources from stdin")?;
            serde_json::from_str(&text).context("parse resources from stdin")?
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("parse {path}"))?
        }
        None => json!({}),
    };
    if !doc.is_object() {
        bail!("resources must be a JSON object");
    }
    let mut set = |section: &str, key: &str, value: Value| {
        let section = doc
            .as_object_mut()
            .map(|d| d.entry(section).or_insert_with(|| json!({})));
        if let Some(Value::Object(s)) = section {
            s.insert(key.to_owned(), value);
        }
    };
    if let Some(m) = &args.memory {
        set("memory", "limit", json!(parse_bytes(m)?));
    }
    if let Some(m) = &args.memory_reservation {
        set("memory", "reservation", json!(parse_bytes(m)?));
    }
    if let Some(m) = &args.memory_swap {
        set("memory", "swap", json!(parse_bytes(m)?));
    }
    if let Some(q) = args.cpu_quota {
        set("cpu", "quota", json!(q));
    }
    if let Some(p) = args.cpu_period {
        set("cpu", "period", json!(p));
    }
    if let Some(s) = args.cpu_shares {
        set("cpu", "shares", json!(s));
    }
    if let Some(c) = &args.cpuset_cpus {
        set("cpu", "cpus", json!(c));
    }
    if let Some(m) = &args.cpuset_mems {
        set("cpu", "mems", json!(m));
    }
    if let Some(p) = args.pids_limit {
        set("pids", "limit", json!(p));
    }
    if let Some(w) = args.blkio_weight {
        set("blockIO", "weight", json!(w));
    }
    serde_json::from_value(doc).context("invalid resources")
}

/// A byte count with an optional k/m/g/t suffix (binary, as runc's units), or -1 (unlimited).
fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: i64 = digits
        .trim()
        .parse()
        .with_context(|| format!("invalid size {text:?}"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("size {text:?} too large"))
}

/// `10s`, `500ms`, `1m`, `2h` (Go duration units used with `--interval`).
fn parse_interval(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid interval {text:?}"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid interval {text:?}"),
    };
    if !secs.is_finite() || secs <= 0.0 {
        bail!("interval must be greater than 0");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `events`: statistics events of the container's cgroup, and (streaming) an `oom` event each
/// time its memory cgroup runs out of memory. As runc, a stopped container is an error
/// (`container with id ID is not running`); while streaming, its stop ends the stream.
pub fn events(root: &Path, args: &EventsArgs) -> Result<()> {
    let interval = parse_interval(&args.interval)?;
    let rt = runtime(root)?;
    let hierarchy = berth_metrics::Hierarchy::detect().context("detect cgroup hierarchy")?;
    let st = rt.state(&args.id).map_err(|e| runtime_error(e, "events"))?;
    if st.status == Status::Stopped {
        bail!("container with id {} is not running", st.id);
    }
    let paths = hierarchy
        .paths_for(&st.cgroup_path)
        .with_context(|| format!("cgroup {}", st.cgroup_path))?;
    // Registered before the first event, so an OOM after it is not missed.
    let mut oom = if args.stats {
        None
    } else {
        match berth_metrics::OomWatcher::channel(&paths) {
            Ok(watch) => Some(watch),
            Err(e) => {
                log(Level::Warning, &format!("no OOM events for {}: {e}", st.id));
                None
            }
        }
    };
    loop {
        let metrics = berth_metrics::read_metrics(&paths)
            .with_context(|| format!("read statistics of {}", st.cgroup_path))?;
        let data = Stats::from_metrics(&metrics, Extra::read(&paths));
        print_event(&Event::stats(&st.id, data))?;
        if args.stats {
            return Ok(());
        }
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some((_, events)) = &oom else {
                std::thread::sleep(left);
                break;
            };
            match events.recv_timeout(left) {
                Ok(_) => print_event(&Event::oom(&st.id))?,
                Err(RecvTimeoutError::Timeout) => break,
                // The cgroup is gone (or the watch failed): no more OOM events.
                Err(RecvTimeoutError::Disconnected) => oom = None,
            }
        }
        let now = rt.state(&args.id).map_err(|e| runtime_error(e, "events"))?;
        if now.status == Status::Stopped {
            return Ok(());
        }
    }
}

/// Prints one event as a JSON line, flushed (a consumer reads events as they come).
fn print_event(event: &Event<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(event)?)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn update_args(argv: &[&str]) -> UpdateArgs {
        let argv = ["berth-runc", "update"]
            .into_iter()
            .chain(argv.iter().copied());
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            Some(crate::cli::Command::Update(u)) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_override_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.json");
        std::fs::write(&file, r#"{"memory":{"limit":1000},"cpu":{"shares":2}}"#).unwrap();
        let args = update_args(&[
            "c1",
            "-r",
            file.to_str().unwrap(),
            "--memory",
            "64m",
            "--pids-limit",
            "-1",
            "--cpu-quota",
            "50000",
        ]);
        let r = resources_from(&args).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), -1);
    }

    #[test]
    fn sizes_and_intervals() {
        assert_eq!(parse_bytes("1k").unwrap(), 1024);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5x").is_err());
    }
}
