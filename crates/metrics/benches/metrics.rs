//! Scrape benchmark: collect and encode the metrics of 100 live cgroups in one scrape.
//!
//! As root on a cgroup v1/hybrid host it creates 100 cgroups (cpu, cpuacct, memory, pids, blkio
//! and, on hybrid hosts, the unified tree), each holding one `sleep` process, and measures
//! (group `scrape_100` in wall time, group `scrape_100_cpu` in process CPU time, which stays
//! meaningful when other jobs load the machine):
//! - `collector`: one full scrape through a registered `CgroupCollector` (read every cgroup on
//!   up to 4 threads + encode text 0.0.4) — the figure the goal (≤ 10 ms) is about;
//! - `collector_open_files`: the same with the open-file cache (`with_open_files`);
//! - `read_only`: reading the 100 cgroups (exposition figures) on one thread;
//! - `encode_only`: encoding already-read statistics.
//!
//! Elsewhere (not root / no v1) it benchmarks 100 containers pointing at the hybrid fixture
//! tree and says so. The cgroups and processes are removed when the benchmark ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use berth_metrics::exposition::{DeviceNames, encode_registry, render_with_devices};
use berth_metrics::fdcache::OpenFiles;
use berth_metrics::{
    CgroupCollector, Container, ContainerStats, Format, Hierarchy, ReadOptions, read_metrics_with,
};
use common::{KillOnDrop, TestCgroup, V1_CONTROLLERS};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::registry::Registry;

const N: usize = 100;

/// CPU time of the whole process (all threads), from `CLOCK_PROCESS_CPUTIME_ID`.
struct ProcessCpu;

fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ProcessCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        process_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        process_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else {
            (1e6, "ms cpu")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _t: f64, _th: &Throughput, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v = 0.0);
        "n/a"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// The 100 containers (live cgroups, or the fixture) and the guards that remove them.
struct Setup {
    containers: Vec<Container>,
    // Children before cgroups: dropped (killed) first.
    _children: Vec<KillOnDrop>,
    _cgroups: Vec<TestCgroup>,
}

fn setup() -> Setup {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let v1 = V1_CONTROLLERS.iter().all(|c| {
        Path::new("/sys/fs/cgroup")
            .join(c)
            .join("cgroup.procs")
            .is_file()
    });
    if !(root && v1) {
        eprintln!("NOTE: not root on a cgroup v1 host; benchmarking the fixture tree instead");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hybrid");
        let h = Hierarchy::detect_at(fixtures).unwrap();
        let containers = (0..N)
            .map(|i| Container {
                id: format!("fixture-{i}"),
                namespace: "bench".into(),
                cgroup: h.paths_for("/berth-fixture").unwrap(),
            })
            .collect();
        return Setup {
            containers,
            _children: Vec::new(),
            _cgroups: Vec::new(),
        };
    }
    let h = Hierarchy::detect().unwrap();
    let mut cgroups = Vec::new();
    let mut children = Vec::new();
    for i in 0..N {
        let cg = TestCgroup::create(&format!("bench{i}"), &V1_CONTROLLERS, true);
        cg.set("memory", "memory.limit_in_bytes", "268435456");
        children.push(KillOnDrop(cg.spawn_sh("exec sleep 600")));
        cgroups.push(cg);
    }
    let containers = cgroups
        .iter()
        .map(|cg| Container {
            id: cg.name.clone(),
            namespace: "bench".into(),
            cgroup: h.paths_for(&cg.name).unwrap(),
        })
        .collect();
    Setup {
        containers,
        _children: children,
        _cgroups: cgroups,
    }
}

fn registry(containers: &[Container], open_files: bool) -> Registry {
    let mut c = CgroupCollector::new(containers.to_vec());
    if open_files {
        c = c.with_open_files(OpenFiles::default_budget());
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(c));
    registry
}

fn run<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let setup = setup();
    let containers = &setup.containers;
    let plain = registry(containers, false);
    let cached = registry(containers, true);
    let text = encode_registry(&plain, Format::Prometheus).unwrap();
    eprintln!(
        "one scrape of {N} containers: {} samples, {} bytes",
        text.lines().filter(|l| !l.starts_with('#')).count(),
        text.len()
    );
    let stats: Vec<ContainerStats> = containers
        .iter()
        .map(|c| ContainerStats {
            id: c.id.clone(),
            namespace: c.namespace.clone(),
            metrics: read_metrics_with(&c.cgroup, &ReadOptions::exposition()).unwrap(),
        })
        .collect();
    let devices = DeviceNames::default();

    let mut group = c.benchmark_group(group_name);
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("collector", |b| {
        b.iter(|| black_box(encode_registry(&plain, Format::Prometheus).unwrap()))
    });
    group.bench_function("collector_open_files", |b| {
        b.iter(|| black_box(encode_registry(&cached, Format::Prometheus).unwrap()))
    });
    group.bench_function("read_only", |b| {
        b.iter(|| {
            for c in containers {
                black_box(read_metrics_with(&c.cgroup, &ReadOptions::exposition()).unwrap());
            }
        })
    });
    group.bench_function("encode_only", |b| {
        b.iter(|| {
            black_box(render_with_devices(&stats, Format::Prometheus, devices.clone()).unwrap())
        })
    });
    group.finish();
}

fn wall(c: &mut Criterion) {
    run(c, "scrape_100");
}

fn cpu(c: &mut Criterion<ProcessCpu>) {
    run(c, "scrape_100_cpu");
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
