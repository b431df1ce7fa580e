//! Container lifecycle through the berth-runtime library: create + start + wait + delete of
//! `/bin/true` in a busybox bundle (issue 4's benchmark).
//!
//! Two modes:
//! - `cargo bench --bench lifecycle`: criterion measures one whole cycle.
//! - `BERTH_LIFECYCLE_CYCLES=N BERTH_LIFECYCLE_OUT=FILE <bench binary>`: runs N plain cycles
//!   (after 3 warm-up cycles) and writes the per-step milliseconds as JSON, for
//!   `benches/compare-lifecycle.sh`, which runs it beside the crun and runc command lines under
//!   the same cgroup view and measures this process's peak RSS with `/usr/bin/time -v`.
//!
//! `BERTH_LIFECYCLE_BUNDLE` names a bundle to use (the comparison passes the one crun and runc
//! run); otherwise one is built from /bin/busybox in a temp dir. `BERTH_LIFECYCLE_ROOT` names
//! the directory under which the state root is made (the comparison puts all three runtimes'
//! state on the same file system); otherwise the system temp dir. Needs root; without it the
//! benchmark prints why and does nothing.
//!
//! The plain mode also records `startup_rss_kB`, this process's peak RSS before its first
//! container (the bench binary itself: std, libc, relocations of a binary that links criterion),
//! so that the library's share of the peak RSS can be told apart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_runtime::{CreateOptions, Runtime, Stdio};
use criterion::{Criterion, criterion_group};

/// Builds a busybox bundle running `/bin/true` in `dir`.
fn make_bundle(dir: &Path) {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "true"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let config = serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": false, "user": { "uid": 0, "gid": 0 }, "args": ["/bin/true"],
            "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// Milliseconds of each step of one cycle.
#[derive(Debug, Clone, Copy)]
struct Cycle {
    create: f64,
    start: f64,
    wait: f64,
    delete: f64,
    total: f64,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// One create + start + wait + delete; the container's stdio is /dev/null.
fn cycle(rt: &Runtime, bundle: &Path, id: &str) -> Cycle {
    let t0 = Instant::now();
    let opts = CreateOptions {
        stdin: Stdio::Null,
        stdout: Stdio::Null,
        stderr: Stdio::Null,
        ..CreateOptions::default()
    };
    let init = rt
        .create(id, bundle, opts)
        .unwrap_or_else(|e| panic!("create {id}: {e}"));
    let create = ms(t0);
    let t = Instant::now();
    rt.start(id).unwrap_or_else(|e| panic!("start {id}: {e}"));
    let start = ms(t);
    let t = Instant::now();
    init.wait().unwrap();
    let wait = ms(t);
    let t = Instant::now();
    rt.delete(id, false)
        .unwrap_or_else(|e| panic!("delete {id}: {e}"));
    let delete = ms(t);
    Cycle {
        create,
        start,
        wait,
        delete,
        total: ms(t0),
    }
}

struct Setup {
    rt: Runtime,
    bundle: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

fn setup() -> Option<Setup> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("lifecycle bench: needs root (namespaces, mounts, cgroups); skipped");
        return None;
    }
    let mut root = tempfile::Builder::new();
    root.prefix("berth-bench-root-");
    let root = match std::env::var_os("BERTH_LIFECYCLE_ROOT") {
        Some(dir) => root.tempdir_in(dir),
        None => root.tempdir(),
    }
    .unwrap();
    let mut dirs = Vec::new();
    let bundle = match std::env::var_os("BERTH_LIFECYCLE_BUNDLE") {
        Some(b) => PathBuf::from(b),
        None => {
            let b = tempfile::Builder::new()
                .prefix("berth-bench-bundle-")
                .tempdir()
                .unwrap();
            make_bundle(b.path());
            let path = b.path().to_path_buf();
            dirs.push(b);
            path
        }
    };
    let rt = Runtime::new(root.path()).unwrap();
    dirs.push(root);
    Some(Setup {
        rt,
        bundle,
        _dirs: dirs,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// This process's peak RSS so far (`VmHWM`), in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The plain mode: N cycles, per-step samples and medians as JSON.
fn plain(n: usize, out: &Path) {
    let Some(s) = setup() else { return };
    let startup_rss = peak_rss_kb();
    let pid = std::process::id();
    for i in 0..3 {
        cycle(&s.rt, &s.bundle, &format!("bench-warm-{pid}-{i}"));
    }
    let samples: Vec<Cycle> = (0..n)
        .map(|i| cycle(&s.rt, &s.bundle, &format!("bench-{pid}-{i}")))
        .collect();
    let pick = |f: fn(&Cycle) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let steps = [
        ("create", pick(|c| c.create)),
        ("start", pick(|c| c.start)),
        ("wait", pick(|c| c.wait)),
        ("delete", pick(|c| c.delete)),
        ("total", pick(|c| c.total)),
    ];
    let mut json = serde_json::Map::new();
    for (name, xs) in steps {
        json.insert(
            name.to_owned(),
            serde_json::json!({ "median": median(xs.clone()), "samples": xs }),
        );
    }
    let doc = serde_json::json!({
        "name": "berth-library", "unit": "ms", "n": n, "steps": json,
        "startup_rss_kB": startup_rss, "peak_rss_kB": peak_rss_kb(),
    });
    std::fs::write(out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

fn bench_lifecycle(c: &mut Criterion) {
    let Some(s) = setup() else { return };
    let pid = std::process::id();
    let mut i = 0u64;
    c.bench_function("lifecycle/create_start_wait_delete_true", |b| {
        b.iter(|| {
            i += 1;
            cycle(&s.rt, &s.bundle, &format!("crit-{pid}-{i}"))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_lifecycle
}

fn main() {
    if let Some(n) = std::env::var("BERTH_LIFECYCLE_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        let out =
            std::env::var_os("BERTH_LIFECYCLE_OUT").unwrap_or_else(|| "lifecycle.json".into());
        plain(n, Path::new(&out));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
