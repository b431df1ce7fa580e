//! Typed statistics, shaped like containerd's `cgroup1/stats/metrics.proto` and
//! `cgroup2/stats/metrics.proto` (serde, JSON-friendly).
//!
//! Conventions:
//! - `Option` = the file feeding that figure was missing (controller not enabled, old kernel);
//!   never "zero".
//! - Units are the kernel's: v1 cpu times in **nanoseconds**, v2 cpu times in **microseconds**,
//!   memory in bytes, PSI `total` in microseconds and `avg*` in percent. The Prometheus exposition
//!   converts to seconds.
//! - Limits: a v2 `max` is stored as [`crate::UNLIMITED`] (`u64::MAX`, as containerd does); v1
//!   limits are the kernel's raw numbers (an unlimited v1 memory limit reads as
//!   9223372036854771712). [`is_unlimited`] recognises both.
//! - Deviation from containerd: PSI is gathered into one top-level [`Pressure`] for both
//!   versions, because on a hybrid host it comes from the unified hierarchy while every other
//!   figure comes from v1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// True when a limit value means "no limit": v2 `max`, or a v1 value at or above 2^62 (the
/// kernel's `PAGE_COUNTER_MAX * PAGE_SIZE` is `LONG_MAX` rounded down to a page).
pub fn is_unlimited(limit: u64) -> bool {
    limit >= (1u64 << 62)
}

/// Statistics of one cgroup, in the shape of the hierarchy they were read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum Metrics {
    /// A cgroup v1 (or hybrid) cgroup.
    V1(V1Metrics),
    /// A cgroup v2 cgroup.
    V2(V2Metrics),
}

/// `pids.current` / `pids.max`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStat {
    /// Number of tasks in the cgroup.
    pub current: u64,
    /// Limit ([`crate::UNLIMITED`] for `max`); `None` when `pids.max` is missing.
    pub limit: Option<u64>,
}

/// One line of a PSI file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiData {
    /// Share of time stalled over the last 10 s, in percent.
    pub avg10: f64,
    /// Share of time stalled over the last 60 s, in percent.
    pub avg60: f64,
    /// Share of time stalled over the last 300 s, in percent.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total: u64,
}

/// The `some` and `full` lines of one PSI file (`cpu.pressure` has `full` since Linux 5.13).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiStats {
    /// At least one task stalled.
    pub some: Option<PsiData>,
    /// All non-idle tasks stalled at once.
    pub full: Option<PsiData>,
}

/// Pressure stall information of a cgroup (cgroup2 `*.pressure` files).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// `cpu.pressure`.
    pub cpu: Option<PsiStats>,
    /// `memory.pressure`.
    pub memory: Option<PsiStats>,
    /// `io.pressure`.
    pub io: Option<PsiStats>,
}

/// Hugetlb figures of one page size (v1 `hugetlb.<size>.*` or v2 `hugetlb.<size>.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbStat {
    /// Page size as the kernel names it (`2MB`, `1GB`).
    pub pagesize: String,
    /// Bytes in use (v1 `usage_in_bytes`, v2 `current`).
    pub usage: u64,
    /// Peak usage (v1 `max_usage_in_bytes`; v2 has none).
    pub max_usage: Option<u64>,
    /// Limit (v1 `limit_in_bytes`, v2 `max`; see [`is_unlimited`]).
    pub limit: Option<u64>,
    /// Times an allocation failed on the limit (v1 `failcnt`, v2 `events` `max`).
    pub failcnt: Option<u64>,
}

/// Declares a struct of optional `u64` fields named after `memory.stat` keys, with a setter
/// that maps a key to its field.
macro_rules! stat_keys {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            $(
                #[doc = concat!("`", stringify!($field), "` of `memory.stat`.")]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<u64>,
            )*
        }

        impl $name {
            /// Stores `value` in the field named `key`; false when no field has that name.
            pub(crate) fn set(&mut self, key: &str, value: u64) -> bool {
                match key {
                    $(stringify!($field) => { self.$field = Some(value); true })*
                    _ => false,
                }
            }
        }
    };
}

// ---------------------------------------------------------------- cgroup v1

/// Statistics of a cgroup v1 cgroup (`cgroup1/stats/metrics.proto` `Metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V1Metrics {
    /// `cpu` + `cpuacct` controllers.
    pub cpu: Option<V1CpuStat>,
    /// `memory` controller.
    pub memory: Option<V1MemoryStat>,
    /// `memory.oom_control`.
    pub memory_oom_control: Option<V1OomControl>,
    /// `pids` controller.
    pub pids: Option<PidsStat>,
    /// `blkio` controller.
    pub blkio: Option<V1BlkIoStat>,
    /// `hugetlb` controller (or, on a hybrid host, the unified hierarchy's hugetlb files).
    pub hugetlb: Option<Vec<HugetlbStat>>,
    /// PSI from the unified hierarchy (hybrid hosts only).
    pub pressure: Option<Pressure>,
}

/// v1 cpu figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1CpuStat {
    /// `cpuacct.*` usage.
    pub usage: Option<V1CpuUsage>,
    /// `cpu.stat` throttling.
    pub throttling: Option<V1Throttle>,
}

/// `cpuacct` usage, nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1CpuUsage {
    /// `cpuacct.usage`.
    pub total: u64,
    /// `cpuacct.usage_sys` (or `cpuacct.stat` `system` × 10 ms when absent).
    pub kernel: Option<u64>,
    /// `cpuacct.usage_user` (or `cpuacct.stat` `user` × 10 ms when absent).
    pub user: Option<u64>,
    /// `cpuacct.usage_percpu`, one entry per possible cpu.
    pub per_cpu: Vec<u64>,
}

/// v1 `cpu.stat` (CFS bandwidth).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Throttle {
    /// `nr_periods`.
    pub periods: u64,
    /// `nr_throttled`.
    pub throttled_periods: u64,
    /// `throttled_time`, nanoseconds.
    pub throttled_time: u64,
    /// `nr_bursts` (Linux ≥ 5.14).
    pub nr_bursts: Option<u64>,
    /// `burst_time`, nanoseconds (Linux ≥ 5.14).
    pub burst_time: Option<u64>,
}

stat_keys!(
    /// The well-known keys of v1 `memory.stat` (containerd's `MemoryStat` fields).
    V1MemoryStatKeys {
        cache, rss, rss_huge, shmem, mapped_file, dirty, writeback, swap, pgpgin, pgpgout,
        pgfault, pgmajfault, inactive_anon, active_anon, inactive_file, active_file, unevictable,
        hierarchical_memory_limit, hierarchical_memsw_limit, total_cache, total_rss,
        total_rss_huge, total_shmem, total_mapped_file, total_dirty, total_writeback, total_swap,
        total_pgpgin, total_pgpgout, total_pgfault, total_pgmajfault, total_inactive_anon,
        total_active_anon, total_inactive_file, total_active_file, total_unevictable,
    }
);

/// One v1 page counter (`memory.*`, `memory.memsw.*`, `memory.kmem.*`, `memory.kmem.tcp.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// `*.usage_in_bytes`.
    pub usage: u64,
    /// `*.limit_in_bytes` (see [`is_unlimited`]).
    pub limit: Option<u64>,
    /// `*.max_usage_in_bytes`.
    pub max: Option<u64>,
    /// `*.failcnt`.
    pub failcnt: Option<u64>,
}

/// v1 memory figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1MemoryStat {
    /// Typed keys of `memory.stat`.
    pub stat: V1MemoryStatKeys,
    /// The whole `memory.stat` map, including keys not typed above.
    pub raw: BTreeMap<String, u64>,
    /// `memory.usage_in_bytes` & co.
    pub usage: Option<MemoryEntry>,
    /// `memory.memsw.*` (memory **plus** swap).
    pub swap: Option<MemoryEntry>,
    /// `memory.kmem.*`.
    pub kernel: Option<MemoryEntry>,
    /// `memory.kmem.tcp.*`.
    pub kernel_tcp: Option<MemoryEntry>,
    /// `usage − total_inactive_file` (saturating), as cAdvisor and the kubelet compute it.
    pub working_set: Option<u64>,
}

/// `memory.oom_control`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1OomControl {
    /// The OOM killer is disabled for this cgroup.
    pub oom_kill_disable: bool,
    /// Tasks are currently stalled on the limit.
    pub under_oom: bool,
    /// OOM kills so far (Linux ≥ 4.13).
    pub oom_kill: Option<u64>,
}

/// One line of a v1 blkio file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkIoEntry {
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, or empty for files without an op column.
    pub op: String,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The value.
    pub value: u64,
}

/// v1 blkio figures. The two `io_service*` lists fall back to the `blkio.throttle.*` files when
/// the CFQ/BFQ files are absent or empty (as containerd does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1BlkIoStat {
    /// Bytes transferred, by op.
    pub io_service_bytes_recursive: Vec<BlkIoEntry>,
    /// I/O operations, by op.
    pub io_serviced_recursive: Vec<BlkIoEntry>,
    /// Queued operations, by op.
    pub io_queued_recursive: Vec<BlkIoEntry>,
    /// Service time in ns, by op.
    pub io_service_time_recursive: Vec<BlkIoEntry>,
    /// Wait time in ns, by op.
    pub io_wait_time_recursive: Vec<BlkIoEntry>,
    /// Merged operations, by op.
    pub io_merged_recursive: Vec<BlkIoEntry>,
    /// Disk time in ms.
    pub io_time_recursive: Vec<BlkIoEntry>,
    /// Sectors transferred.
    pub sectors_recursive: Vec<BlkIoEntry>,
}

// ---------------------------------------------------------------- cgroup v2

/// Statistics of a cgroup v2 cgroup (`cgroup2/stats/metrics.proto` `Metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V2Metrics {
    /// `pids.current` / `pids.max`.
    pub pids: Option<PidsStat>,
    /// `cpu.stat`.
    pub cpu: Option<V2CpuStat>,
    /// `memory.*`.
    pub memory: Option<V2MemoryStat>,
    /// `memory.events`.
    pub memory_events: Option<MemoryEvents>,
    /// `io.stat`.
    pub io: Option<IoStat>,
    /// `hugetlb.<size>.*`.
    pub hugetlb: Option<Vec<HugetlbStat>>,
    /// `cpu.pressure`, `memory.pressure`, `io.pressure`.
    pub pressure: Option<Pressure>,
}

/// v2 `cpu.stat`, microseconds. Without the `cpu` controller enabled only the `usage`, `user`
/// and `system` keys exist, so the throttling keys are optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2CpuStat {
    /// `usage_usec`.
    pub usage_usec: u64,
    /// `user_usec`.
    pub user_usec: u64,
    /// `system_usec`.
    pub system_usec: u64,
    /// `nr_periods`.
    pub nr_periods: Option<u64>,
    /// `nr_throttled`.
    pub nr_throttled: Option<u64>,
    /// `throttled_usec`.
    pub throttled_usec: Option<u64>,
    /// `nr_bursts`.
    pub nr_bursts: Option<u64>,
    /// `burst_usec`.
    pub burst_usec: Option<u64>,
}

stat_keys!(
    /// The well-known keys of v2 `memory.stat` (containerd's `MemoryStat` fields).
    V2MemoryStatKeys {
        anon, file, kernel, kernel_stack, pagetables, sec_pagetables, percpu, sock, vmalloc,
        shmem, zswap, zswapped, file_mapped, file_dirty, file_writeback, swapcached, anon_thp,
        file_thp, shmem_thp, inactive_anon, active_anon, inactive_file, active_file, unevictable,
        slab_reclaimable, slab_unreclaimable, slab, workingset_refault_anon,
        workingset_refault_file, workingset_activate_anon, workingset_activate_file,
        workingset_restore_anon, workingset_restore_file, workingset_nodereclaim, pgscan,
        pgsteal, pgfault, pgmajfault, pgrefill, pgactivate, pgdeactivate, pglazyfree,
        pglazyfreed, thp_fault_alloc, thp_collapse_alloc,
    }
);

/// v2 memory figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2MemoryStat {
    /// Typed keys of `memory.stat`.
    pub stat: V2MemoryStatKeys,
    /// The whole `memory.stat` map.
    pub raw: BTreeMap<String, u64>,
    /// `memory.current`.
    pub usage: Option<u64>,
    /// `memory.max`.
    pub usage_limit: Option<u64>,
    /// `memory.peak` (Linux ≥ 5.19).
    pub max_usage: Option<u64>,
    /// `memory.swap.current`.
    pub swap_usage: Option<u64>,
    /// `memory.swap.max`.
    pub swap_limit: Option<u64>,
    /// `memory.swap.peak` (Linux ≥ 6.5).
    pub swap_max_usage: Option<u64>,
    /// `usage − inactive_file` (saturating).
    pub working_set: Option<u64>,
}

/// v2 `memory.events` (hierarchical counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEvents {
    /// Reclaimed below `memory.low`.
    pub low: u64,
    /// Throttled above `memory.high`.
    pub high: u64,
    /// Usage about to exceed `memory.max`.
    pub max: u64,
    /// Allocations that hit the limit and failed to reclaim (OOM).
    pub oom: u64,
    /// Processes killed by the OOM killer.
    pub oom_kill: u64,
    /// Whole-group OOM kills (Linux ≥ 5.17).
    pub oom_group_kill: Option<u64>,
}

/// One device of v2 `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Bytes read.
    pub rbytes: u64,
    /// Bytes written.
    pub wbytes: u64,
    /// Read operations.
    pub rios: u64,
    /// Write operations.
    pub wios: u64,
    /// Bytes discarded.
    pub dbytes: u64,
    /// Discard operations.
    pub dios: u64,
}

/// v2 `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoStat {
    /// One entry per device.
    pub usage: Vec<IoEntry>,
}
