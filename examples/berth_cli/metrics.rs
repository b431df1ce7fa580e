//! `berth metrics` and `berth serve-metrics`: cgroup statistics of containers through the
//! metrics crate.
//!
//! Containers are found in the runtime's state root (`--runtime-root`, default `/run/berth`,
//! the `--root` of `berth-runc`): their `state.json` names the cgroup path, which
//! [`Hierarchy::paths_for`] turns into this host's directories. `--cgroup PATH` reads a cgroup
//! directly (its path relative to the hierarchy roots, e.g. `/berth/abc`).
//!
//! `serve-metrics` is a deliberately small HTTP/1.1 server on one thread: one request per
//! connection (`Connection: close`), request heads up to 8 KiB read with a 5 s timeout,
//! `GET`/`HEAD /metrics` only (404 elsewhere, 405 for other methods), and content negotiation:
//! an `Accept` naming `application/openmetrics-text` gets OpenMetrics 1.0, anything else the
//! text format 0.0.4. Each scrape reads the runtime's current containers with a
//! [`CgroupCollector`] registered in a Prometheus registry (so its own read-error counter is
//! exported too), keeping the cgroup files open between scrapes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth::metrics::exposition::encode_registry;
use berth::metrics::fdcache::OpenFiles;
use berth::metrics::prometheus_client::registry::Registry;
use berth::metrics::{
    CgroupCollector, Container, ContainerStats, Format, Hierarchy, Metrics, is_unlimited,
    read_metrics, render,
};
use clap::{Args, Subcommand};

use crate::run::DEFAULT_RUNTIME_ROOT;

/// The metrics commands (flattened into `berth`'s top level).
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Print the cgroup statistics of containers (all of the runtime's when none is named).
    Metrics(MetricsArgs),
    /// Serve the statistics of the runtime's containers over HTTP at /metrics.
    ServeMetrics {
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:9323")]
        listen: String,
        /// The runtime's state root.
        #[arg(long, default_value = DEFAULT_RUNTIME_ROOT)]
        runtime_root: PathBuf,
    },
}

/// Arguments of `berth metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The runtime's state root.
    #[arg(long, default_value = DEFAULT_RUNTIME_ROOT)]
    pub runtime_root: PathBuf,
    /// A cgroup path relative to the hierarchy roots (e.g. /berth/ID); repeatable.
    #[arg(long = "cgroup")]
    pub cgroups: Vec<String>,
    /// Print the typed statistics as JSON.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the Prometheus text exposition (format 0.0.4).
    #[arg(long)]
    pub prometheus: bool,
    /// Container ids.
    pub ids: Vec<String>,
}

/// Runs a metrics command.
pub fn run(cmd: &MetricsCommand) -> Result<()> {
    match cmd {
        MetricsCommand::Metrics(args) => metrics(args),
        MetricsCommand::ServeMetrics {
            listen,
            runtime_root,
        } => serve(listen, runtime_root),
    }
}

/// The containers of the runtime root (`ids`, or all when empty) with their cgroups.
fn containers(h: &Hierarchy, runtime_root: &Path, ids: &[String]) -> Result<Vec<Container>> {
    let ids = if ids.is_empty() {
        berth::runtime::state::list(runtime_root)?
    } else {
        ids.to_vec()
    };
    let mut out = Vec::new();
    for id in ids {
        let st = berth::runtime::read_state(runtime_root, &id)
            .with_context(|| format!("container {id} in {}", runtime_root.display()))?;
        out.push(Container {
            cgroup: h.paths_for(&st.cgroup_path)?,
            id,
            namespace: "default".to_owned(),
        });
    }
    Ok(out)
}

fn metrics(args: &MetricsArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let mut list = Vec::new();
    if args.cgroups.is_empty() || !args.ids.is_empty() {
        list = containers(&h, &args.runtime_root, &args.ids)?;
    }
    for c in &args.cgroups {
        list.push(Container {
            id: c.clone(),
            namespace: "default".to_owned(),
            cgroup: h.paths_for(c)?,
        });
    }
    let mut stats = Vec::new();
    for c in list {
        let metrics = read_metrics(&c.cgroup).with_context(|| format!("reading {}", c.id))?;
        stats.push(ContainerStats {
            id: c.id,
            namespace: c.namespace,
            metrics,
        });
    }
    print(args, &stats)
}

/// Prints `stats` as `args` asks: JSON, Prometheus text, or the table (also used by
/// `berth --address … metrics`).
pub fn print(args: &MetricsArgs, stats: &[ContainerStats]) -> Result<()> {
    let text = if args.json {
        serde_json::to_string_pretty(stats)? + "\n"
    } else if args.prometheus {
        render(stats, Format::Prometheus)?
    } else {
        table(stats)
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The figures of the table: cpu seconds, memory usage and limit, pids and their limit.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// CPU time used, seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory in use, bytes.
    pub memory: Option<u64>,
    /// Memory limit, bytes (`None` when unlimited).
    pub memory_limit: Option<u64>,
    /// Processes.
    pub pids: Option<u64>,
    /// Process limit (`None` when unlimited).
    pub pids_limit: Option<u64>,
}

/// Summarises v1 or v2 statistics.
pub fn summary(m: &Metrics) -> Summary {
    let limited = |l: Option<u64>| l.filter(|v| !is_unlimited(*v));
    match m {
        Metrics::V1(v) => Summary {
            cpu_seconds: v
                .cpu
                .as_ref()
                .and_then(|c| c.usage.as_ref())
                .map(|u| u.total as f64 / 1e9),
            memory: v
                .memory
                .as_ref()
                .and_then(|m| m.usage.as_ref())
                .map(|u| u.usage),
            memory_limit: limited(
                v.memory
                    .as_ref()
                    .and_then(|m| m.usage.as_ref())
                    .and_then(|u| u.limit),
            ),
            pids: v.pids.as_ref().map(|p| p.current),
            pids_limit: limited(v.pids.as_ref().and_then(|p| p.limit)),
        },
        Metrics::V2(v) => Summary {
            cpu_seconds: v.cpu.as_ref().map(|c| c.usage_usec as f64 / 1e6),
            memory: v.memory.as_ref().and_then(|m| m.usage),
            memory_limit: limited(v.memory.as_ref().and_then(|m| m.usage_limit)),
            pids: v.pids.as_ref().map(|p| p.current),
            pids_limit: limited(v.pids.as_ref().and_then(|p| p.limit)),
        },
    }
}

/// Bytes in binary units.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn table(stats: &[ContainerStats]) -> String {
    use std::fmt::Write as _;
    let dash = || "-".to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34}  {:>10}  {:>11}  {:>11}  {:>5}  {:>10}",
        "CONTAINER", "CPU (s)", "MEM USAGE", "MEM LIMIT", "PIDS", "PIDS LIMIT"
    );
    for s in stats {
        let f = summary(&s.metrics);
        let _ = writeln!(
            out,
            "{:<34}  {:>10}  {:>11}  {:>11}  {:>5}  {:>10}",
            s.id,
            f.cpu_seconds.map_or_else(dash, |c| format!("{c:.3}")),
            f.memory.map_or_else(dash, human),
            f.memory_limit.map_or_else(|| "unlimited".to_owned(), human),
            f.pids.map_or_else(dash, |p| p.to_string()),
            f.pids_limit
                .map_or_else(|| "unlimited".to_owned(), |p| p.to_string()),
        );
    }
    out
}

/// The most bytes of a request head we read.
const MAX_REQUEST: u64 = 8 * 1024;

fn serve(listen: &str, runtime_root: &Path) -> Result<()> {
    let h = Hierarchy::detect()?;
    let root = runtime_root.to_path_buf();
    let collector = CgroupCollector::new(move || {
        let ids = berth::runtime::state::list(&root).unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| {
                let st = berth::runtime::read_state(&root, &id).ok()?;
                Some(Container {
                    cgroup: h.paths_for(&st.cgroup_path).ok()?,
                    id,
                    namespace: "default".to_owned(),
                })
            })
            .collect()
    })
    // Keep the cgroup files open between scrapes: a re-read is a pread, not an open.
    .with_open_files(OpenFiles::default_budget());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("listening on http://{}/metrics", listener.local_addr()?);
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if let Err(e) = handle(stream, &registry) {
            eprintln!("berth serve-metrics: {e:#}");
        }
    }
    Ok(())
}

/// A parsed request head: method, path, and whether OpenMetrics is accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The client accepts OpenMetrics.
    pub openmetrics: bool,
}

/// Reads and parses a request head (bounded by [`MAX_REQUEST`]).
pub fn read_request(stream: impl Read) -> Result<Request> {
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("malformed request line {line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("unsupported protocol {version:?}");
    }
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut openmetrics = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            bail!("request head too large or truncated");
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.trim().eq_ignore_ascii_case("accept")
        {
            openmetrics |= v.contains("application/openmetrics-text");
        }
    }
    Ok(Request {
        method: method.to_owned(),
        path,
        openmetrics,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head: bool,
) -> Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()?;
    Ok(())
}

fn handle(mut stream: TcpStream, registry: &Registry) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let text = "text/plain; charset=utf-8";
    let req = match read_request(&stream) {
        Ok(r) => r,
        Err(e) => {
            let _ = respond(&mut stream, "400 Bad Request", text, "bad request\n", false);
            return Err(e);
        }
    };
    let head = req.method == "HEAD";
    if req.path != "/metrics" {
        return respond(&mut stream, "404 Not Found", text, "not found\n", head);
    }
    if req.method != "GET" && !head {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            text,
            "GET or HEAD\n",
            false,
        );
    }
    let format = if req.openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let body = encode_registry(registry, format)?;
    respond(&mut stream, "200 OK", format.content_type(), &body, head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = read_request(
            &b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n"[..],
        )
        .unwrap();
        assert_eq!(r.path, "/metrics");
        assert!(r.openmetrics);
        let r = read_request(&b"HEAD / HTTP/1.0\r\n\r\n"[..]).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.openmetrics),
            ("HEAD", "/", false)
        );
        assert!(read_request(&b"garbage\r\n\r\n"[..]).is_err());
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(read_request(huge.as_bytes()).is_err());
    }
}
