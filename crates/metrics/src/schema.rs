//! The version-independent schema: which figures are exported, under which names, and how a
//! v1 or v2 [`Metrics`] maps onto them (see `README.md` for the table and the rules).

use std::fmt::Write as _;

use prometheus_client::registry::Unit;

use crate::types::{Metrics, PsiStats, V1Metrics, V2Metrics, is_unlimited};

/// How a scalar figure is exported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Def {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) unit: Option<UnitKind>,
    pub(crate) counter: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum UnitKind {
    Seconds,
    Bytes,
}

pub(crate) static SECONDS: Unit = Unit::Seconds;
pub(crate) static BYTES: Unit = Unit::Bytes;

impl UnitKind {
    pub(crate) fn unit(self) -> &'static Unit {
        match self {
            UnitKind::Seconds => &SECONDS,
            UnitKind::Bytes => &BYTES,
        }
    }
}

/// Declares the scalar (one sample per container) figures: an index enum and their table.
macro_rules! scalars {
    ($($id:ident: $name:literal, $kind:ident, $unit:ident, $help:literal;)*) => {
        #[derive(Debug, Clone, Copy)]
        #[allow(clippy::enum_variant_names)]
        pub(crate) enum S { $($id),* }
        pub(crate) const N_SCALARS: usize = [$(S::$id),*].len();
        pub(crate) const SCALARS: [Def; N_SCALARS] = [$(Def {
            name: $name,
            help: $help,
            unit: scalars!(@unit $unit),
            counter: scalars!(@counter $kind),
        }),*];
    };
    (@unit none) => { None };
    (@unit seconds) => { Some(UnitKind::Seconds) };
    (@unit bytes) => { Some(UnitKind::Bytes) };
    (@counter counter) => { true };
    (@counter gauge) => { false };
}

scalars! {
    CpuUsage: "container_cpu_usage", counter, seconds, "Total CPU time consumed.";
    CpuUser: "container_cpu_user", counter, seconds, "CPU time consumed in user mode.";
    CpuSystem: "container_cpu_system", counter, seconds, "CPU time consumed in kernel mode.";
    CpuPeriods: "container_cpu_periods", counter, none, "CFS bandwidth periods elapsed.";
    CpuThrottledPeriods: "container_cpu_throttled_periods", counter, none, "CFS bandwidth periods in which the cgroup was throttled.";
    CpuThrottled: "container_cpu_throttled", counter, seconds, "Time the cgroup was throttled.";
    CpuBursts: "container_cpu_bursts", counter, none, "CFS bandwidth periods in which a burst occurred.";
    CpuBurst: "container_cpu_burst", counter, seconds, "Time spent bursting beyond the quota.";
    MemUsage: "container_memory_usage", gauge, bytes, "Memory in use, including page cache.";
    MemLimit: "container_memory_limit", gauge, bytes, "Memory limit (absent when unlimited).";
    MemMaxUsage: "container_memory_max_usage", gauge, bytes, "Peak memory usage.";
    MemWorkingSet: "container_memory_working_set", gauge, bytes, "Working set: usage minus inactive file cache.";
    MemSwapUsage: "container_memory_swap_usage", gauge, bytes, "Swap in use.";
    MemSwapLimit: "container_memory_swap_limit", gauge, bytes, "Swap limit (cgroup v2; absent when unlimited).";
    MemAnon: "container_memory_anon", gauge, bytes, "Anonymous memory (v1 total_rss).";
    MemFile: "container_memory_file", gauge, bytes, "Page cache (v1 total_cache).";
    MemFileMapped: "container_memory_file_mapped", gauge, bytes, "Page cache mapped into processes.";
    MemFileDirty: "container_memory_file_dirty", gauge, bytes, "Dirty page cache.";
    MemFileWriteback: "container_memory_file_writeback", gauge, bytes, "Page cache under writeback.";
    MemShmem: "container_memory_shmem", gauge, bytes, "Shared memory and tmpfs.";
    MemAnonThp: "container_memory_anon_thp", gauge, bytes, "Anonymous transparent huge pages.";
    MemActiveAnon: "container_memory_active_anon", gauge, bytes, "Anonymous memory on the active LRU list.";
    MemInactiveAnon: "container_memory_inactive_anon", gauge, bytes, "Anonymous memory on the inactive LRU list.";
    MemActiveFile: "container_memory_active_file", gauge, bytes, "Page cache on the active LRU list.";
    MemInactiveFile: "container_memory_inactive_file", gauge, bytes, "Page cache on the inactive LRU list.";
    MemUnevictable: "container_memory_unevictable", gauge, bytes, "Unevictable memory.";
    MemKernel: "container_memory_kernel", gauge, bytes, "Kernel memory (v1 memory.kmem.usage_in_bytes, v2 memory.stat kernel).";
    MemKernelStack: "container_memory_kernel_stack", gauge, bytes, "Kernel stacks.";
    MemSlab: "container_memory_slab", gauge, bytes, "Slab allocations.";
    MemSock: "container_memory_sock", gauge, bytes, "Network buffers (v1 memory.kmem.tcp.usage_in_bytes).";
    MemPageFaults: "container_memory_page_faults", counter, none, "Page faults (minor and major).";
    MemMajorPageFaults: "container_memory_major_page_faults", counter, none, "Major page faults.";
    MemLowEvents: "container_memory_low_events", counter, none, "Reclaims while usage was under memory.low.";
    MemHighEvents: "container_memory_high_events", counter, none, "Times usage was throttled above memory.high.";
    MemMaxEvents: "container_memory_max_events", counter, none, "Times usage hit the memory limit (v1 memory.failcnt, v2 memory.events max).";
    MemOomEvents: "container_memory_oom_events", counter, none, "Times the limit was hit and reclaim failed (OOM).";
    MemOomKills: "container_memory_oom_kills", counter, none, "Processes killed by the OOM killer.";
    MemOomGroupKills: "container_memory_oom_group_kills", counter, none, "Whole-cgroup OOM kills.";
    MemUnderOom: "container_memory_under_oom", gauge, none, "1 while tasks are stalled on the limit with the OOM killer disabled (cgroup v1).";
    PidsCurrent: "container_pids_current", gauge, none, "Number of tasks.";
    PidsLimit: "container_pids_limit", gauge, none, "Task limit (absent when unlimited).";
    CpuPressureSome: "container_cpu_pressure_some", counter, seconds, "Time some tasks were stalled waiting for CPU (PSI).";
    CpuPressureFull: "container_cpu_pressure_full", counter, seconds, "Time all tasks were stalled waiting for CPU (PSI).";
    MemPressureSome: "container_memory_pressure_some", counter, seconds, "Time some tasks were stalled on memory (PSI).";
    MemPressureFull: "container_memory_pressure_full", counter, seconds, "Time all tasks were stalled on memory (PSI).";
    IoPressureSome: "container_io_pressure_some", counter, seconds, "Time some tasks were stalled on I/O (PSI).";
    IoPressureFull: "container_io_pressure_full", counter, seconds, "Time all tasks were stalled on I/O (PSI).";
}

/// A value of a sample: integer counts stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val {
    U(u64),
    F(f64),
}

/// One device's I/O figures.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Io {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) read_bytes: Option<u64>,
    pub(crate) write_bytes: Option<u64>,
    pub(crate) reads: Option<u64>,
    pub(crate) writes: Option<u64>,
    pub(crate) discard_bytes: Option<u64>,
    pub(crate) discards: Option<u64>,
}

/// One page size's hugetlb figures.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Huge {
    pub(crate) page_size: String,
    pub(crate) usage: u64,
    pub(crate) max_usage: Option<u64>,
    pub(crate) limit: Option<u64>,
    pub(crate) max_events: Option<u64>,
}

/// The normalised, version-independent figures of one container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flat {
    pub(crate) scalars: [Option<Val>; N_SCALARS],
    pub(crate) per_cpu_seconds: Vec<f64>,
    pub(crate) io: Vec<Io>,
    pub(crate) hugetlb: Vec<Huge>,
}

pub(crate) const NS: f64 = 1e9;
pub(crate) const US: f64 = 1e6;

impl Flat {
    fn set(&mut self, s: S, v: Option<Val>) {
        self.scalars[s as usize] = v;
    }
    fn u(&mut self, s: S, v: Option<u64>) {
        self.set(s, v.map(Val::U));
    }
    fn secs(&mut self, s: S, v: Option<u64>, per_second: f64) {
        self.set(s, v.map(|v| Val::F(v as f64 / per_second)));
    }
    fn limit(&mut self, s: S, v: Option<u64>) {
        self.u(s, v.filter(|l| !is_unlimited(*l)));
    }
    fn psi(&mut self, some: S, full: S, p: Option<&PsiStats>) {
        let total = |d: Option<&crate::types::PsiData>| d.map(|d| d.total);
        self.secs(some, p.and_then(|p| total(p.some.as_ref())), US);
        self.secs(full, p.and_then(|p| total(p.full.as_ref())), US);
    }

    pub(crate) fn from_metrics(m: &Metrics) -> Flat {
        let mut f = Flat {
            scalars: [None; N_SCALARS],
            per_cpu_seconds: Vec::new(),
            io: Vec::new(),
            hugetlb: Vec::new(),
        };
        let (pressure, hugetlb) = match m {
            Metrics::V1(v) => {
                f.fill_v1(v);
                (v.pressure.as_ref(), v.hugetlb.as_deref())
            }
            Metrics::V2(v) => {
                f.fill_v2(v);
                (v.pressure.as_ref(), v.hugetlb.as_deref())
            }
        };
        if let Some(p) = pressure {
            f.psi(S::CpuPressureSome, S::CpuPressureFull, p.cpu.as_ref());
            f.psi(S::MemPressureSome, S::MemPressureFull, p.memory.as_ref());
            f.psi(S::IoPressureSome, S::IoPressureFull, p.io.as_ref());
        }
        f.hugetlb = hugetlb
            .unwrap_or_default()
            .iter()
            .map(|h| Huge {
                page_size: h.pagesize.clone(),
                usage: h.usage,
                max_usage: h.max_usage,
                limit: h.limit.filter(|l| !is_unlimited(*l)),
                max_events: h.failcnt,
            })
            .collect();
        f
    }

    fn fill_v1(&mut self, v: &V1Metrics) {
        if let Some(cpu) = &v.cpu {
            if let Some(u) = &cpu.usage {
                self.secs(S::CpuUsage, Some(u.total), NS);
                self.secs(S::CpuUser, u.user, NS);
                self.secs(S::CpuSystem, u.kernel, NS);
                self.per_cpu_seconds = u.per_cpu.iter().map(|ns| *ns as f64 / NS).collect();
            }
            if let Some(t) = &cpu.throttling {
                self.u(S::CpuPeriods, Some(t.periods));
                self.u(S::CpuThrottledPeriods, Some(t.throttled_periods));
                self.secs(S::CpuThrottled, Some(t.throttled_time), NS);
                self.u(S::CpuBursts, t.nr_bursts);
                self.secs(S::CpuBurst, t.burst_time, NS);
            }
        }
        if let Some(m) = &v.memory {
            let s = &m.stat;
            if let Some(u) = &m.usage {
                self.u(S::MemUsage, Some(u.usage));
                self.limit(S::MemLimit, u.limit);
                self.u(S::MemMaxUsage, u.max);
                self.u(S::MemMaxEvents, u.failcnt);
                if let Some(sw) = &m.swap {
                    self.u(S::MemSwapUsage, Some(sw.usage.saturating_sub(u.usage)));
                }
            }
            self.u(S::MemWorkingSet, m.working_set);
            self.u(S::MemAnon, s.total_rss);
            self.u(S::MemFile, s.total_cache);
            self.u(S::MemFileMapped, s.total_mapped_file);
            self.u(S::MemFileDirty, s.total_dirty);
            self.u(S::MemFileWriteback, s.total_writeback);
            self.u(S::MemShmem, s.total_shmem);
            self.u(S::MemAnonThp, s.total_rss_huge);
            self.u(S::MemActiveAnon, s.total_active_anon);
            self.u(S::MemInactiveAnon, s.total_inactive_anon);
            self.u(S::MemActiveFile, s.total_active_file);
            self.u(S::MemInactiveFile, s.total_inactive_file);
            self.u(S::MemUnevictable, s.total_unevictable);
            self.u(S::MemPageFaults, s.total_pgfault);
            self.u(S::MemMajorPageFaults, s.total_pgmajfault);
            self.u(S::MemKernel, m.kernel.as_ref().map(|k| k.usage));
            self.u(S::MemSock, m.kernel_tcp.as_ref().map(|k| k.usage));
        }
        if let Some(o) = &v.memory_oom_control {
            self.u(S::MemOomKills, o.oom_kill);
            self.u(S::MemUnderOom, Some(u64::from(o.under_oom)));
        }
        if let Some(p) = &v.pids {
            self.u(S::PidsCurrent, Some(p.current));
            self.limit(S::PidsLimit, p.limit);
        }
        if let Some(b) = &v.blkio {
            let mut by_dev: Vec<Io> = Vec::new();
            let mut slot = |major: u64, minor: u64| -> usize {
                match by_dev
                    .iter()
                    .position(|d| d.major == major && d.minor == minor)
                {
                    Some(i) => i,
                    None => {
                        by_dev.push(Io {
                            major,
                            minor,
                            ..Io::default()
                        });
                        by_dev.len() - 1
                    }
                }
            };
            let mut idx = Vec::new();
            for e in &b.io_service_bytes_recursive {
                idx.push((slot(e.major, e.minor), &e.op, e.value, true));
            }
            for e in &b.io_serviced_recursive {
                idx.push((slot(e.major, e.minor), &e.op, e.value, false));
            }
            for (i, op, value, bytes) in idx {
                let d = &mut by_dev[i];
                let field = match (op.as_str(), bytes) {
                    ("Read", true) => &mut d.read_bytes,
                    ("Write", true) => &mut d.write_bytes,
                    ("Discard", true) => &mut d.discard_bytes,
                    ("Read", false) => &mut d.reads,
                    ("Write", false) => &mut d.writes,
                    ("Discard", false) => &mut d.discards,
                    _ => continue,
                };
                *field = Some(value);
            }
            self.io = by_dev;
        }
    }

    fn fill_v2(&mut self, v: &V2Metrics) {
        if let Some(c) = &v.cpu {
            self.secs(S::CpuUsage, Some(c.usage_usec), US);
            self.secs(S::CpuUser, Some(c.user_usec), US);
            self.secs(S::CpuSystem, Some(c.system_usec), US);
            self.u(S::CpuPeriods, c.nr_periods);
            self.u(S::CpuThrottledPeriods, c.nr_throttled);
            self.secs(S::CpuThrottled, c.throttled_usec, US);
            self.u(S::CpuBursts, c.nr_bursts);
            self.secs(S::CpuBurst, c.burst_usec, US);
        }
        if let Some(m) = &v.memory {
            let s = &m.stat;
            self.u(S::MemUsage, m.usage);
            self.limit(S::MemLimit, m.usage_limit);
            self.u(S::MemMaxUsage, m.max_usage);
            self.u(S::MemWorkingSet, m.working_set);
            self.u(S::MemSwapUsage, m.swap_usage);
            self.limit(S::MemSwapLimit, m.swap_limit);
            self.u(S::MemAnon, s.anon);
            self.u(S::MemFile, s.file);
            self.u(S::MemFileMapped, s.file_mapped);
            self.u(S::MemFileDirty, s.file_dirty);
            self.u(S::MemFileWriteback, s.file_writeback);
            self.u(S::MemShmem, s.shmem);
            self.u(S::MemAnonThp, s.anon_thp);
            self.u(S::MemActiveAnon, s.active_anon);
            self.u(S::MemInactiveAnon, s.inactive_anon);
            self.u(S::MemActiveFile, s.active_file);
            self.u(S::MemInactiveFile, s.inactive_file);
            self.u(S::MemUnevictable, s.unevictable);
            self.u(S::MemKernel, s.kernel);
            self.u(S::MemKernelStack, s.kernel_stack);
            self.u(S::MemSlab, s.slab);
            self.u(S::MemSock, s.sock);
            self.u(S::MemPageFaults, s.pgfault);
            self.u(S::MemMajorPageFaults, s.pgmajfault);
        }
        if let Some(e) = &v.memory_events {
            self.u(S::MemLowEvents, Some(e.low));
            self.u(S::MemHighEvents, Some(e.high));
            self.u(S::MemMaxEvents, Some(e.max));
            self.u(S::MemOomEvents, Some(e.oom));
            self.u(S::MemOomKills, Some(e.oom_kill));
            self.u(S::MemOomGroupKills, e.oom_group_kill);
        }
        if let Some(p) = &v.pids {
            self.u(S::PidsCurrent, Some(p.current));
            self.limit(S::PidsLimit, p.limit);
        }
        if let Some(io) = &v.io {
            self.io = io
                .usage
                .iter()
                .map(|e| Io {
                    major: e.major,
                    minor: e.minor,
                    read_bytes: Some(e.rbytes),
                    write_bytes: Some(e.wbytes),
                    reads: Some(e.rios),
                    writes: Some(e.wios),
                    discard_bytes: Some(e.dbytes),
                    discards: Some(e.dios),
                })
                .collect();
        }
    }
}

/// All metric names this schema can produce, as they appear in the text format (with unit and
/// `_total` suffixes), in output order.
pub fn metric_names() -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |name: &str, unit: Option<UnitKind>, counter: bool| {
        let mut n = String::from(name);
        if let Some(u) = unit {
            let _ = write!(n, "_{}", u.unit().as_str());
        }
        if counter {
            n.push_str("_total");
        }
        out.push(n);
    };
    for d in &SCALARS {
        push(d.name, d.unit, d.counter);
    }
    push("container_cpu_per_cpu_usage", Some(UnitKind::Seconds), true);
    for (n, u) in [
        ("container_io_read", Some(UnitKind::Bytes)),
        ("container_io_write", Some(UnitKind::Bytes)),
        ("container_io_reads", None),
        ("container_io_writes", None),
        ("container_io_discard", Some(UnitKind::Bytes)),
        ("container_io_discards", None),
    ] {
        push(n, u, true);
    }
    for n in [
        "container_hugetlb_usage",
        "container_hugetlb_max_usage",
        "container_hugetlb_limit",
    ] {
        push(n, Some(UnitKind::Bytes), false);
    }
    push("container_hugetlb_max_events", None, true);
    out
}
