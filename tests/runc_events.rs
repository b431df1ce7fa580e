//! `berth-runc events --stats` against running containers: runc's JSON layout (the same keys,
//! in the same order, as runc prints for the same bundle on this host) with plausible figures
//! after the container did some work. Root, busybox and runc are required (skipped with a
//! reason outside CI, a failure under CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/runc_support.rs"]
mod runc_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use runc_support::{Bundle, StateRoot, have_busybox, have_root, have_tool, unique};

const MEMORY_LIMIT: u64 = 64 << 20;
const PIDS_LIMIT: u64 = 64;

/// A busybox bundle whose process burns some cpu, marks `/tmp/done`, then sleeps; with memory
/// and pids limits.
fn working_bundle() -> Bundle {
    let bundle = Bundle::busybox(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo > /tmp/done; sleep 1000",
        ],
        false,
    );
    bundle.edit(|c| {
        let resources = c["linux"]
            .as_object_mut()
            .unwrap()
            .entry("resources")
            .or_insert_with(|| serde_json::json!({}));
        resources["memory"] = serde_json::json!({ "limit": MEMORY_LIMIT });
        resources["pids"] = serde_json::json!({ "limit": PIDS_LIMIT });
    });
    bundle
}

/// Waits until the bundle's process has done its work.
fn wait_done(bundle: &Bundle) {
    let done = bundle.path().join("rootfs/tmp/done");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "the container never finished its loop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The object keys of the JSON document `text` as dotted paths (`.data.cpu.usage.total`), in
/// the order they are written (serde_json's `Value` sorts keys, so the text is scanned). Keys
/// below a path in `skip` (whose presence depends on values, `omitempty` zeros) are left out.
fn ordered_key_paths(text: &str, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    // One entry per open object or list: (is an object, its path).
    let mut open: Vec<(bool, String)> = Vec::new();
    let mut last_key: Option<String> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '[' => {
                let path = last_key
                    .take()
                    .or_else(|| open.last().map(|(_, p)| p.clone()))
                    .unwrap_or_default();
                open.push((c == '{', path));
            }
            '}' | ']' => {
                open.pop();
                last_key = None;
            }
            ',' => last_key = None,
            '"' => {
                let start = i + 1;
                let mut end = text.len();
                while let Some((j, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        end = j;
                        break;
                    }
                }
                let is_key = text
                    .get(end + 1..)
                    .unwrap_or("")
                    .trim_start()
                    .starts_with(':');
                if let (true, Some((true, parent))) = (is_key, open.last()) {
                    let path = format!("{parent}.{}", &text[start..end]);
                    if !skip.iter().any(|s| path.starts_with(&format!("{s}."))) {
                        out.push(path.clone());
                    }
                    last_key = Some(path);
                }
            }
            _ => {}
        }
    }
    out
}

/// The paths of `paths` directly below `parent`.
fn children<'a>(paths: &'a [String], parent: &str) -> Vec<&'a str> {
    paths
        .iter()
        .filter_map(|p| p.strip_prefix(parent)?.strip_prefix('.'))
        .filter(|rest| !rest.contains('.'))
        .collect()
}

/// A runc container of its own root, deleted on drop.
struct RuncContainer {
    root: tempfile::TempDir,
    id: String,
}

impl RuncContainer {
    fn run(bundle: &Bundle) -> RuncContainer {
        let root = tempfile::Builder::new()
            .prefix("berth-runc-ref-")
            .tempdir()
            .unwrap();
        let c = RuncContainer {
            root,
            id: unique("ev-runc"),
        };
        let out = c.runc(&["run", "-d", "-b", bundle.arg(), &c.id]);
        assert!(out.status.success(), "runc run: {out:?}");
        c
    }

    /// Runs `runc --root ROOT ARGS...`. Output goes through files: a detached container keeps
    /// its copies of stdout/stderr, so pipes would not reach end of file while it runs.
    fn runc(&self, args: &[&str]) -> Output {
        use std::io::{Read, Seek};
        let mut out = tempfile::tempfile().unwrap();
        let mut err = tempfile::tempfile().unwrap();
        let status = Command::new("runc")
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |f: &mut std::fs::File| {
            let mut buf = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut buf).unwrap();
            buf
        };
        Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
        }
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
    }
}

fn stats_of(out: &Output) -> (String, Value) {
    assert!(out.status.success(), "events --stats: {out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one event, then exit: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    (text, v)
}

#[test]
fn stats_have_runcs_layout_and_plausible_figures() {
    if !(have_root() && have_busybox() && have_tool("runc")) {
        return;
    }
    let root = StateRoot::new();
    let bundle = working_bundle();
    let id = unique("ev-stats");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    wait_done(&bundle);
    let (text, event) = stats_of(&root.run(&["events", "--stats", &id]));

    let paths = ordered_key_paths(&text, &[]);
    assert_eq!(children(&paths, ""), ["type", "id", "data"], "{text}");
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(
        children(&paths, ".data"),
        [
            "cpu",
            "cpuset",
            "memory",
            "pids",
            "blkio",
            "hugetlb",
            "intel_rdt",
            "network_interfaces"
        ],
        "{text}"
    );
    assert_eq!(
        children(&paths, ".data.cpu.usage"),
        [
            "total",
            "percpu",
            "percpu_kernel",
            "percpu_user",
            "kernel",
            "user"
        ],
        "{text}"
    );
    let data = &event["data"];

    // cpu: nanoseconds, one per-cpu figure per possible cpu, summing to the total.
    let usage = &data["cpu"]["usage"];
    let total = usage["total"].as_u64().unwrap();
    assert!(total > 0, "{usage}");
    let percpu: Vec<u64> = serde_json::from_value(usage["percpu"].clone()).unwrap();
    assert!(!percpu.is_empty(), "{usage}");
    assert_eq!(percpu.iter().sum::<u64>(), total, "{usage}");
    assert!(
        usage["kernel"].is_u64() && usage["user"].is_u64(),
        "{usage}"
    );
    assert!(data["cpu"]["throttling"].is_object(), "{data}");

    // memory: the limit set, a usage below it, runc's entries.
    let memory = &data["memory"];
    assert_eq!(memory["usage"]["limit"], MEMORY_LIMIT, "{memory}");
    let used = memory["usage"]["usage"].as_u64().unwrap();
    assert!(used > 0 && used < MEMORY_LIMIT, "{memory}");
    assert!(memory["usage"]["max"].as_u64().unwrap() >= used, "{memory}");
    for entry in ["usage", "swap", "kernel", "kernelTCP"] {
        assert!(memory[entry]["limit"].is_u64(), "{entry}: {memory}");
        assert!(memory[entry]["failcnt"].is_u64(), "{entry}: {memory}");
    }
    assert!(
        memory["raw"].as_object().is_some_and(|r| !r.is_empty()),
        "{memory}"
    );

    // pids: the shell and its sleep, under the limit set.
    let current = data["pids"]["current"].as_u64().unwrap();
    assert!((1..PIDS_LIMIT).contains(&current), "{data}");
    assert_eq!(data["pids"]["limit"], PIDS_LIMIT, "{data}");

    assert!(
        data["blkio"].is_object() && data["hugetlb"].is_object(),
        "{data}"
    );
    assert_eq!(data["intel_rdt"], serde_json::json!({}));
    assert!(data["network_interfaces"].is_null());
    if PathBuf::from("/sys/fs/cgroup/cpuset/cpuset.cpus").exists() {
        assert!(
            data["cpuset"]["cpus"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{data}"
        );
    }

    // The same bundle under runc: the same keys in the same order (figures whose presence
    // depends on their value — zero is omitted — left out of the comparison).
    std::fs::remove_file(bundle.path().join("rootfs/tmp/done")).unwrap();
    let reference = RuncContainer::run(&bundle);
    wait_done(&bundle);
    let (runc_text, _) = stats_of(&reference.runc(&["events", "--stats", &reference.id]));
    let skip = [
        ".data.memory.raw",
        ".data.memory.cache",
        ".data.blkio",
        ".data.hugetlb",
    ];
    let without_cache = |text: &str| {
        let mut paths = ordered_key_paths(text, &skip);
        paths.retain(|p| p != ".data.memory.cache");
        paths
    };
    let (ours, theirs) = (without_cache(&text), without_cache(&runc_text));
    // cpu (9), cpuset (11), memory entries (4 × ~4), pids, the rest: a real document each.
    assert!(ours.len() > 40, "{ours:?}");
    assert_eq!(ours, theirs, "berth-runc: {text}\nrunc: {runc_text}");
}

#[test]
fn stats_of_a_stopped_container_are_refused() {
    if !(have_root() && have_busybox()) {
        return;
    }
    let root = StateRoot::new();
    let bundle = Bundle::busybox(&["sleep", "1000"], false);
    let id = unique("ev-stopped");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    root.ok(&["kill", &id, "KILL"]);
    root.wait_status(&id, "stopped");
    let out = root.run(&["events", "--stats", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not running"),
        "{out:?}"
    );
    root.ok(&["delete", &id]);
}

#[test]
fn streamed_events_report_an_oom() {
    if !(have_root() && have_busybox()) {
        return;
    }
    let limit = 16u64 << 20;
    let root = StateRoot::new();
    // Waits for the go-ahead, then has dd allocate a 64 MiB buffer under a 16 MiB limit
    // (memory plus swap too, so the kernel cannot swap instead).
    let bundle = Bundle::busybox(
        &[
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.02; done; \
             dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000",
        ],
        false,
    );
    std::os::unix::fs::symlink("busybox", bundle.path().join("rootfs/bin/dd")).unwrap();
    bundle.edit(|c| {
        let resources = c["linux"]
            .as_object_mut()
            .unwrap()
            .entry("resources")
            .or_insert_with(|| serde_json::json!({}));
        resources["memory"] = serde_json::json!({ "limit": limit, "swap": limit });
    });
    let id = unique("ev-oom");
    root.ok(&["run", "-d", "-b", bundle.arg(), &id]);
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut events = root
        .cmd(&["events", "--interval", "100ms", &id])
        .stdin(Stdio::null())
        .stdout(out_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let read_events = || -> Vec<Value> {
        std::fs::read_to_string(out_file.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // The OOM watch is registered before the first event is printed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_events().is_empty() {
        assert!(Instant::now() < deadline, "no first event");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(bundle.path().join("rootfs/tmp/go"), "").unwrap();
    let oom = serde_json::json!({ "type": "oom", "id": id });
    while !read_events().contains(&oom) {
        if Instant::now() >= deadline {
            let _ = events.kill();
            let _ = events.wait();
            panic!("no oom event: {:?}", read_events());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    root.ok(&["kill", &id, "KILL"]);
    root.wait_status(&id, "stopped");
    let status = events.wait().unwrap();
    assert!(status.success(), "{status}");
    // The OOM event carries nothing else; the stream's other events are statistics.
    let all = read_events();
    assert!(
        all.iter()
            .all(|e| e == &oom || (e["type"] == "stats" && e["data"].is_object())),
        "{all:?}"
    );
    root.ok(&["delete", &id]);
}
