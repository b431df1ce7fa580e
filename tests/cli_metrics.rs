//! `berth metrics` and `berth serve-metrics` on live containers started with `berth run -d`
//! (unique store and runtime roots; needs root — skips with a reason outside CI, fails under
//! CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/berth_support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::{Env, IMAGE, have_tool, prerequisites};

/// The memory limit and pids limit of one container's JSON statistics (v1 or v2 shape).
fn limits(stats: &Value) -> (u64, u64) {
    let m = &stats["metrics"];
    let memory = match m["version"].as_str() {
        Some("v1") => m["memory"]["usage"]["limit"].as_u64(),
        _ => m["memory"]["usage_limit"].as_u64(),
    };
    (memory.unwrap(), m["pids"]["limit"].as_u64().unwrap())
}

#[test]
fn metrics_show_the_limits_set_by_run() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("metrics");
    let id = env.run_detached(&[
        "--memory",
        "48m",
        "--pids-limit",
        "17",
        "--cpus",
        "0.5",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let state = env.state.to_str().unwrap();

    let json = env.ok(&["metrics", "--runtime-root", state, "--json", &id]);
    let stats: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stats[0]["id"], id.as_str());
    assert_eq!(limits(&stats[0]), (48 << 20, 17));
    assert_eq!(stats[0]["metrics"]["pids"]["current"], 1);

    // All containers of the runtime root when none is named, as a table.
    let table = env.ok(&["metrics", "--runtime-root", state]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("48.0 MiB") && row.trim_end().ends_with("17"),
        "{row}"
    );

    // By cgroup path.
    let json = env.ok(&["metrics", "--cgroup", &format!("/berth/{id}"), "--json"]);
    let stats: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(limits(&stats[0]), (48 << 20, 17));

    let out = env.berth(&["metrics", "--runtime-root", state, "no-such-container"]);
    assert!(!out.status.success());
}

#[test]
fn prometheus_output_passes_promtool() {
    if !prerequisites() || !have_tool("promtool") {
        return;
    }
    let env = Env::new("promtool");
    let id = env.run_detached(&["--memory", "32m", IMAGE, "sleep", "1000"]);
    let text = env.ok(&[
        "metrics",
        "--runtime-root",
        env.state.to_str().unwrap(),
        "--prometheus",
        &id,
    ]);
    assert!(
        text.contains(&format!(
            "container_memory_limit_bytes{{container_id=\"{id}\",namespace=\"default\"}} 33554432"
        )),
        "{text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills and reaps the server on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; returns (status line, headers, body).
fn get(addr: &str, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

#[test]
fn serve_metrics_answers_over_http() {
    if !prerequisites() {
        return;
    }
    let env = Env::new("serve");
    let id = env.run_detached(&["--memory", "40m", IMAGE, "sleep", "1000"]);
    let mut child = env
        .cmd()
        .args(["serve-metrics", "--listen", "127.0.0.1:0", "--runtime-root"])
        .arg(&env.state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _server = Server(child);
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let (status, headers, body) = get(&addr, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(
        body.contains(&format!(
            "container_memory_limit_bytes{{container_id=\"{id}\",namespace=\"default\"}} 41943040"
        )),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
    // The collector is served through a registry, so its own health counter is there too.
    assert!(body.contains("berth_metrics_read_errors_total"), "{body}");

    let (status, headers, body) = get(
        &addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains(&id));

    let (status, _, _) = get(&addr, "/other", None);
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // A removed container disappears from the next scrape.
    env.ok(&["rm", "-f", &id]);
    let (_, _, body) = get(&addr, "/metrics", None);
    assert!(!body.contains(&id), "{body}");
}
