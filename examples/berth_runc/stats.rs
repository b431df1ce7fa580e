//! `events` statistics in runc's JSON layout (runc's `types.Stats`, as `runc events --stats`
//! prints it), built from berth-metrics' typed cgroup figures.
//!
//! runc encodes its types with Go's `encoding/json`, and consumers compare keys, so the layout
//! follows Go's rules exactly: fields in declaration order; `omitempty` drops a zero number,
//! an empty string, list or map, and a nil pointer, but never a struct (so `"throttling": {}`,
//! `"blkio": {}` and `"intel_rdt": {}` appear empty); fields without `omitempty` always appear
//! (`kernel`, `user`, `limit`, `failcnt`); a nil list without it is `null`
//! (`network_interfaces`). The structs below carry the same `skip_serializing_if` rules.
//!
//! The mapping is runc's own:
//! - cgroup v1: cpu times in nanoseconds as the kernel gives them (`cpuacct.usage*`, per-cpu
//!   kernel/user split from `cpuacct.usage_all`); `memory.swap` is the `memsw` counter (memory
//!   plus swap) and `memory.cache` the `cache` key of `memory.stat`; `pids.limit` is 0 when
//!   unlimited; blkio lists as the kernel files list them (per-device `Total` lines included).
//! - cgroup v2: `cpu.stat` microseconds scaled to nanoseconds; `memory.swap` reported as
//!   memory plus swap (runc's v1-compatible figure); `memory.cache` is `file`; `io.stat` bytes
//!   and operations as `Read`/`Write` entries; PSI where the kernel has it.
//!
//! berth-metrics does not read the cpuset controller nor the per-cpu kernel/user split; those
//! few files are read here. Intel RDT and network interfaces are not collected (`{}`, `null`).

use std::collections::BTreeMap;
use std::path::Path;

use berth_metrics::{
    BlkIoEntry, CgroupPaths, HugetlbStat, MemoryEntry as BerthMemoryEntry, Metrics, PidsStat,
    PsiStats, V1Metrics, V2Metrics, is_unlimited,
};
use serde::Serialize;

fn zero(n: &u64) -> bool {
    *n == 0
}

/// runc's `types.Event`: `{"type":"stats","id":...,"data":{...}}`, or `{"type":"oom","id":...}`
/// (its `data` is `omitempty`).
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Stats>,
}

impl<'a> Event<'a> {
    /// The statistics event of container `id`.
    pub fn stats(id: &'a str, data: Stats) -> Self {
        Event {
            kind: "stats",
            id,
            data: Some(data),
        }
    }

    /// The event runc prints when container `id`'s memory cgroup went out of memory.
    pub fn oom(id: &'a str) -> Self {
        Event {
            kind: "oom",
            id,
            data: None,
        }
    }
}

/// runc's `types.Stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    cpu: Cpu,
    cpuset: CpuSet,
    memory: Memory,
    pids: Pids,
    blkio: Blkio,
    hugetlb: BTreeMap<String, Hugetlb>,
    intel_rdt: IntelRdt,
    network_interfaces: Option<Vec<()>>,
}

#[derive(Debug, Default, Serialize)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<Psi>,
}

#[derive(Debug, Default, Serialize)]
struct CpuUsage {
    #[serde(skip_serializing_if = "zero")]
    total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu_user: Vec<u64>,
    kernel: u64,
    user: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Throttling {
    #[serde(skip_serializing_if = "zero")]
    periods: u64,
    #[serde(skip_serializing_if = "zero")]
    throttled_periods: u64,
    #[serde(skip_serializing_if = "zero")]
    throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cpus: Vec<u16>,
    cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mems: Vec<u16>,
    mem_hardwall: u64,
    mem_exclusive: u64,
    memory_migrate: u64,
    memory_spread_page: u64,
    memory_spread_slab: u64,
    memory_pressure: u64,
    sched_load_balance: u64,
    sched_relax_domain_level: i64,
}

#[derive(Debug, Default, Serialize)]
struct Memory {
    #[serde(skip_serializing_if = "zero")]
    cache: u64,
    usage: MemoryEntry,
    swap: MemoryEntry,
    kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    raw: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<Psi>,
}

#[derive(Debug, Default, Serialize)]
struct MemoryEntry {
    limit: u64,
    #[serde(skip_serializing_if = "zero")]
    usage: u64,
    #[serde(skip_serializing_if = "zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
struct Pids {
    #[serde(skip_serializing_if = "zero")]
    current: u64,
    #[serde(skip_serializing_if = "zero")]
    limit: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_serviced_recursive: Vec<BlkioEntry>,
    // runc's JSON name really is `ioQueueRecursive`.
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sectors_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<Psi>,
}

#[derive(Debug, Default, Serialize)]
struct BlkioEntry {
    #[serde(skip_serializing_if = "zero")]
    major: u64,
    #[serde(skip_serializing_if = "zero")]
    minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    op: String,
    #[serde(skip_serializing_if = "zero")]
    value: u64,
}

#[derive(Debug, Default, Serialize)]
struct Hugetlb {
    #[serde(skip_serializing_if = "zero")]
    usage: u64,
    #[serde(skip_serializing_if = "zero")]
    max: u64,
    failcnt: u64,
}

/// Not collected: always `{}`.
#[derive(Debug, Default, Serialize)]
struct IntelRdt {}

/// runc's `PSIStats` (its `some`/`full` are structs, so both always appear).
#[derive(Debug, Default, Serialize)]
struct Psi {
    some: PsiData,
    full: PsiData,
}

#[derive(Debug, Default, Serialize)]
struct PsiData {
    avg10: f64,
    avg60: f64,
    avg300: f64,
    total: u64,
}

/// The cgroup files berth-metrics does not read, as runc reports them.
#[derive(Debug, Default, PartialEq)]
pub struct Extra {
    /// Per-cpu kernel and user nanoseconds (v1 `cpuacct.usage_all`).
    percpu_kernel: Vec<u64>,
    percpu_user: Vec<u64>,
    cpuset: CpuSetFiles,
}

#[derive(Debug, Default, PartialEq)]
struct CpuSetFiles {
    cpus: Vec<u16>,
    mems: Vec<u16>,
    flags: [u64; 8],
    sched_relax_domain_level: i64,
}

/// The v1 cpuset flag files, in runc's field order.
const CPUSET_FLAGS: [&str; 8] = [
    "cpuset.cpu_exclusive",
    "cpuset.mem_hardwall",
    "cpuset.mem_exclusive",
    "cpuset.memory_migrate",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.memory_pressure",
    "cpuset.sched_load_balance",
];

impl Extra {
    /// Reads the extra files of the cgroup at `paths`; a missing or unreadable file leaves its
    /// figures empty (as runc leaves a controller it cannot read).
    pub fn read(paths: &CgroupPaths) -> Extra {
        let mut extra = Extra::default();
        let read = |dir: &Path, name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if paths.is_v1() {
            if let Some(text) = paths
                .controller("cpuacct")
                .and_then(|d| read(d, "cpuacct.usage_all"))
            {
                (extra.percpu_kernel, extra.percpu_user) = parse_usage_all(&text);
            }
            if let Some(dir) = paths.controller("cpuset") {
                let set = &mut extra.cpuset;
                set.cpus = read(dir, "cpuset.cpus").map_or_else(Vec::new, |t| parse_list(&t));
                set.mems = read(dir, "cpuset.mems").map_or_else(Vec::new, |t| parse_list(&t));
                for (slot, name) in set.flags.iter_mut().zip(CPUSET_FLAGS) {
                    *slot = read(dir, name)
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0);
                }
                set.sched_relax_domain_level = read(dir, "cpuset.sched_relax_domain_level")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
            }
        } else if let Some(dir) = paths.unified() {
            let set = &mut extra.cpuset;
            set.cpus = read(dir, "cpuset.cpus.effective").map_or_else(Vec::new, |t| parse_list(&t));
            set.mems = read(dir, "cpuset.mems.effective").map_or_else(Vec::new, |t| parse_list(&t));
        }
        extra
    }
}

/// `cpuacct.usage_all`: a `cpu user system` header, then one line per cpu.
fn parse_usage_all(text: &str) -> (Vec<u64>, Vec<u64>) {
    let mut kernel = Vec::new();
    let mut user = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<u64> = line
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        if let [_, u, k] = cols[..] {
            user.push(u);
            kernel.push(k);
        }
    }
    (kernel, user)
}

/// A kernel cpu/node list (`0-3,5`).
fn parse_list(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
            out.extend(lo..=hi);
        }
    }
    out
}

impl Stats {
    /// runc's statistics from berth-metrics' figures and the [`Extra`] files.
    pub fn from_metrics(metrics: &Metrics, extra: Extra) -> Stats {
        let mut stats = match metrics {
            Metrics::V1(m) => from_v1(m),
            Metrics::V2(m) => from_v2(m),
        };
        stats.cpu.usage.percpu_kernel = extra.percpu_kernel;
        stats.cpu.usage.percpu_user = extra.percpu_user;
        let set = extra.cpuset;
        let [
            cpu_exclusive,
            mem_hardwall,
            mem_exclusive,
            memory_migrate,
            memory_spread_page,
            memory_spread_slab,
            memory_pressure,
            sched_load_balance,
        ] = set.flags;
        stats.cpuset = CpuSet {
            cpus: set.cpus,
            cpu_exclusive,
            mems: set.mems,
            mem_hardwall,
            mem_exclusive,
            memory_migrate,
            memory_spread_page,
            memory_spread_slab,
            memory_pressure,
            sched_load_balance,
            sched_relax_domain_level: set.sched_relax_domain_level,
        };
        stats
    }
}

fn pids(p: Option<&PidsStat>) -> Pids {
    p.map_or_else(Pids::default, |p| Pids {
        current: p.current,
        limit: p.limit.filter(|l| !is_unlimited(*l)).unwrap_or(0),
    })
}

fn hugetlb(h: Option<&Vec<HugetlbStat>>) -> BTreeMap<String, Hugetlb> {
    h.into_iter()
        .flatten()
        .map(|h| {
            let entry = Hugetlb {
                usage: h.usage,
                max: h.max_usage.unwrap_or(0),
                failcnt: h.failcnt.unwrap_or(0),
            };
            (h.pagesize.clone(), entry)
        })
        .collect()
}

fn psi(p: Option<&PsiStats>) -> Option<Psi> {
    let data = |d: Option<&berth_metrics::PsiData>| {
        d.map_or_else(PsiData::default, |d| PsiData {
            avg10: d.avg10,
            avg60: d.avg60,
            avg300: d.avg300,
            total: d.total,
        })
    };
    p.map(|p| Psi {
        some: data(p.some.as_ref()),
        full: data(p.full.as_ref()),
    })
}

fn from_v1(m: &V1Metrics) -> Stats {
    let mut s = Stats::default();
    if let Some(cpu) = &m.cpu {
        if let Some(u) = &cpu.usage {
            s.cpu.usage.total = u.total;
            s.cpu.usage.percpu = u.per_cpu.clone();
            s.cpu.usage.kernel = u.kernel.unwrap_or(0);
            s.cpu.usage.user = u.user.unwrap_or(0);
        }
        if let Some(t) = &cpu.throttling {
            s.cpu.throttling = Throttling {
                periods: t.periods,
                throttled_periods: t.throttled_periods,
                throttled_time: t.throttled_time,
            };
        }
    }
    if let Some(mem) = &m.memory {
        let entry = |e: Option<&BerthMemoryEntry>| {
            e.map_or_else(MemoryEntry::default, |e| MemoryEntry {
                limit: e.limit.unwrap_or(0),
                usage: e.usage,
                max: e.max.unwrap_or(0),
                failcnt: e.failcnt.unwrap_or(0),
            })
        };
        s.memory = Memory {
            cache: mem.stat.cache.unwrap_or(0),
            usage: entry(mem.usage.as_ref()),
            swap: entry(mem.swap.as_ref()),
            kernel: entry(mem.kernel.as_ref()),
            kernel_tcp: entry(mem.kernel_tcp.as_ref()),
            raw: mem.raw.clone(),
            psi: None,
        };
    }
    s.pids = pids(m.pids.as_ref());
    if let Some(b) = &m.blkio {
        let list = |l: &[BlkIoEntry]| {
            l.iter()
                .map(|e| BlkioEntry {
                    major: e.major,
                    minor: e.minor,
                    op: e.op.clone(),
                    value: e.value,
                })
                .collect()
        };
        s.blkio = Blkio {
            io_service_bytes_recursive: list(&b.io_service_bytes_recursive),
            io_serviced_recursive: list(&b.io_serviced_recursive),
            io_queued_recursive: list(&b.io_queued_recursive),
            io_service_time_recursive: list(&b.io_service_time_recursive),
            io_wait_time_recursive: list(&b.io_wait_time_recursive),
            io_merged_recursive: list(&b.io_merged_recursive),
            io_time_recursive: list(&b.io_time_recursive),
            sectors_recursive: list(&b.sectors_recursive),
            psi: None,
        };
    }
    s.hugetlb = hugetlb(m.hugetlb.as_ref());
    s
}

fn from_v2(m: &V2Metrics) -> Stats {
    let mut s = Stats::default();
    let pressure = m.pressure.as_ref();
    if let Some(cpu) = &m.cpu {
        s.cpu.usage.total = cpu.usage_usec.saturating_mul(1000);
        s.cpu.usage.kernel = cpu.system_usec.saturating_mul(1000);
        s.cpu.usage.user = cpu.user_usec.saturating_mul(1000);
        s.cpu.throttling = Throttling {
            periods: cpu.nr_periods.unwrap_or(0),
            throttled_periods: cpu.nr_throttled.unwrap_or(0),
            throttled_time: cpu.throttled_usec.unwrap_or(0).saturating_mul(1000),
        };
    }
    s.cpu.psi = psi(pressure.and_then(|p| p.cpu.as_ref()));
    if let Some(mem) = &m.memory {
        let usage = mem.usage.unwrap_or(0);
        let limit = mem.usage_limit.unwrap_or(0);
        let failcnt = m.memory_events.as_ref().map_or(0, |e| e.max);
        let swap = mem.swap_usage.map(|swap| {
            let swap_limit = mem.swap_limit.unwrap_or(0);
            MemoryEntry {
                // Memory plus swap, as v1's memsw and as runc reports v2.
                usage: swap.saturating_add(usage),
                limit: if is_unlimited(swap_limit) {
                    swap_limit
                } else {
                    swap_limit.saturating_add(limit)
                },
                max: 0,
                failcnt: 0,
            }
        });
        s.memory = Memory {
            cache: mem.raw.get("file").copied().unwrap_or(0),
            usage: MemoryEntry {
                limit,
                usage,
                max: mem.max_usage.unwrap_or(0),
                failcnt,
            },
            swap: swap.unwrap_or_default(),
            kernel: MemoryEntry::default(),
            kernel_tcp: MemoryEntry::default(),
            raw: mem.raw.clone(),
            psi: psi(pressure.and_then(|p| p.memory.as_ref())),
        };
    }
    s.pids = pids(m.pids.as_ref());
    if let Some(io) = &m.io {
        let entry = |e: &berth_metrics::IoEntry, op: &str, value: u64| BlkioEntry {
            major: e.major,
            minor: e.minor,
            op: op.to_owned(),
            value,
        };
        for e in &io.usage {
            let bytes = &mut s.blkio.io_service_bytes_recursive;
            bytes.push(entry(e, "Read", e.rbytes));
            bytes.push(entry(e, "Write", e.wbytes));
            let ops = &mut s.blkio.io_serviced_recursive;
            ops.push(entry(e, "Read", e.rios));
            ops.push(entry(e, "Write", e.wios));
        }
    }
    s.blkio.psi = psi(pressure.and_then(|p| p.io.as_ref()));
    s.hugetlb = hugetlb(m.hugetlb.as_ref());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_metrics::{V1CpuStat, V1CpuUsage, V1MemoryStat};

    #[test]
    fn v1_layout_is_runcs() {
        let mut raw = BTreeMap::new();
        raw.insert("cache".to_owned(), 0);
        raw.insert("rss".to_owned(), 53248);
        let unlimited = 9_223_372_036_854_771_712;
        let m = Metrics::V1(V1Metrics {
            cpu: Some(V1CpuStat {
                usage: Some(V1CpuUsage {
                    total: 31_779_346,
                    kernel: Some(0),
                    user: Some(20_000_000),
                    per_cpu: vec![8_022_189, 23_757_157],
                }),
                throttling: None,
            }),
            memory: Some(V1MemoryStat {
                raw,
                usage: Some(BerthMemoryEntry {
                    usage: 307_200,
                    limit: Some(104_857_600),
                    max: Some(2_777_088),
                    failcnt: Some(0),
                }),
                kernel_tcp: Some(BerthMemoryEntry {
                    usage: 0,
                    limit: Some(unlimited),
                    max: Some(0),
                    failcnt: Some(0),
                }),
                ..V1MemoryStat::default()
            }),
            pids: Some(PidsStat {
                current: 1,
                limit: Some(u64::MAX),
            }),
            blkio: Some(Default::default()),
            ..V1Metrics::default()
        });
        let extra = Extra {
            percpu_kernel: vec![4_000_000, 0],
            percpu_user: vec![0, 24_000_000],
            cpuset: CpuSetFiles {
                cpus: vec![0, 1],
                mems: vec![0],
                flags: [0, 0, 0, 0, 0, 0, 0, 1],
                sched_relax_domain_level: -1,
            },
        };
        let event = Event::stats("c1", Stats::from_metrics(&m, extra));
        let text = serde_json::to_string(&event).unwrap();
        let expected = concat!(
            r#"{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":31779346,"percpu":[8022189,23757157],"#,
            r#""percpu_kernel":[4000000,0],"percpu_user":[0,24000000],"kernel":0,"#,
            r#""user":20000000},"throttling":{}},"#,
            r#""cpuset":{"cpus":[0,1],"cpu_exclusive":0,"mems":[0],"mem_hardwall":0,"#,
            r#""mem_exclusive":0,"memory_migrate":0,"memory_spread_page":0,"#,
            r#""memory_spread_slab":0,"memory_pressure":0,"sched_load_balance":1,"#,
            r#""sched_relax_domain_level":-1},"#,
            r#""memory":{"usage":{"limit":104857600,"usage":307200,"max":2777088,"failcnt":0},"#,
            r#""swap":{"limit":0,"failcnt":0},"kernel":{"limit":0,"failcnt":0},"#,
            r#""kernelTCP":{"limit":9223372036854771712,"failcnt":0},"#,
            r#""raw":{"cache":0,"rss":53248}},"#,
            r#""pids":{"current":1},"blkio":{},"hugetlb":{},"intel_rdt":{},"#,
            r#""network_interfaces":null}}"#
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn v2_reports_nanoseconds_and_memory_plus_swap() {
        let m = Metrics::V2(V2Metrics {
            cpu: Some(berth_metrics::V2CpuStat {
                usage_usec: 5,
                user_usec: 3,
                system_usec: 2,
                nr_periods: Some(4),
                ..Default::default()
            }),
            memory: Some(berth_metrics::V2MemoryStat {
                usage: Some(100),
                usage_limit: Some(1000),
                swap_usage: Some(7),
                swap_limit: Some(u64::MAX),
                ..Default::default()
            }),
            io: Some(berth_metrics::IoStat {
                usage: vec![berth_metrics::IoEntry {
                    major: 8,
                    rbytes: 512,
                    wios: 1,
                    ..Default::default()
                }],
            }),
            ..V2Metrics::default()
        });
        let v = serde_json::to_value(Stats::from_metrics(&m, Extra::default())).unwrap();
        assert_eq!(v["cpu"]["usage"]["total"], 5000);
        assert_eq!(v["cpu"]["usage"]["kernel"], 2000);
        assert_eq!(v["cpu"]["throttling"]["periods"], 4);
        assert_eq!(v["memory"]["usage"]["limit"], 1000);
        assert_eq!(v["memory"]["swap"]["usage"], 107);
        assert_eq!(v["memory"]["swap"]["limit"], u64::MAX);
        assert_eq!(
            v["blkio"]["ioServiceBytesRecursive"][0],
            serde_json::json!({"major": 8, "op": "Read", "value": 512})
        );
        assert_eq!(
            v["blkio"]["ioServicedRecursive"][1],
            serde_json::json!({"major": 8, "op": "Write", "value": 1})
        );
        assert!(v["cpu"].get("psi").is_none());
    }

    #[test]
    fn oom_events_carry_no_data() {
        let text = serde_json::to_string(&Event::oom("c1")).unwrap();
        assert_eq!(text, r#"{"type":"oom","id":"c1"}"#);
    }

    #[test]
    fn kernel_lists_and_usage_all() {
        assert_eq!(parse_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(parse_list("\n"), Vec::<u16>::new());
        let (kernel, user) = parse_usage_all("cpu user system\n0 10 20\n1 30 40\n");
        assert_eq!(kernel, vec![20, 40]);
        assert_eq!(user, vec![10, 30]);
    }
}
