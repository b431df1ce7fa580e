//! cgroup v1 readers.
//!
//! The files are read directly rather than through cgroups-rs: cgroups-rs finds v1 hierarchies
//! only through `/proc/self/mountinfo`, so it cannot be pointed at a fixture tree, it cannot say
//! "this one file was missing" (a missing file reads as 0 or fails the whole read), and it has
//! neither PSI nor v2 hugetlb in hybrid mode. The crate's live tests compare these readers with
//! cgroups-rs on the host (`tests/live_v1.rs`).
//!
//! Files read, per controller directory:
//! - `cpuacct`: `cpuacct.usage`, `cpuacct.usage_user`, `cpuacct.usage_sys` (falling back to
//!   `cpuacct.stat` in USER_HZ = 100 ticks), `cpuacct.usage_percpu`;
//! - `cpu`: `cpu.stat`;
//! - `memory`: `memory.stat`, `memory{,.memsw,.kmem,.kmem.tcp}.{usage_in_bytes,limit_in_bytes,
//!   max_usage_in_bytes,failcnt}`, `memory.oom_control`;
//! - `pids`: `pids.current`, `pids.max`;
//! - `blkio`: `blkio.io_*_recursive`, `blkio.sectors_recursive`, with the
//!   `blkio.throttle.io_service{_bytes,d}_recursive` fallback;
//! - `hugetlb`: `hugetlb.<size>.{usage_in_bytes,max_usage_in_bytes,limit_in_bytes,failcnt}`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ReadOptions;
use crate::detect::CgroupPaths;
use crate::error::{MetricsError, Result};
use crate::files::{
    for_each_flat, list_infix, parse_dev, parse_u64, read_flat, read_u64, read_u64_list, read_with,
};
use crate::types::{
    BlkIoEntry, HugetlbStat, MemoryEntry, PidsStat, V1BlkIoStat, V1CpuStat, V1CpuUsage,
    V1MemoryStat, V1Metrics, V1OomControl, V1Throttle,
};
use crate::{psi, v2};

/// Nanoseconds per USER_HZ tick (`cpuacct.stat` is in USER_HZ, which is 100 on Linux).
const NS_PER_USER_HZ: u64 = 10_000_000;

/// Reads every v1 figure of the cgroup at `paths` (plus PSI, and hugetlb when v1 has none, from
/// its unified directory on hybrid hosts).
pub fn read_v1(paths: &CgroupPaths, opts: &ReadOptions) -> Result<V1Metrics> {
    let cpu = read_cpu(paths.controller("cpuacct"), paths.controller("cpu"))?;
    let (memory, memory_oom_control) = match paths.controller("memory") {
        Some(dir) => (read_memory(dir, opts)?, read_oom_control(dir)?),
        None => (None, None),
    };
    let pids = match paths.controller("pids") {
        Some(dir) => read_pids(dir)?,
        None => None,
    };
    let blkio = match paths.controller("blkio") {
        Some(dir) => read_blkio(dir, opts)?,
        None => None,
    };
    let mut hugetlb = match paths.controller("hugetlb") {
        Some(dir) => read_hugetlb(dir)?,
        None => None,
    };
    let mut pressure = None;
    if let Some(unified) = paths.unified() {
        pressure = psi::read_pressure(unified)?;
        if hugetlb.is_none() {
            hugetlb = v2::read_hugetlb(unified)?;
        }
    }
    Ok(V1Metrics {
        cpu,
        memory,
        memory_oom_control,
        pids,
        blkio,
        hugetlb,
        pressure,
    })
}

/// Reads `cpuacct` usage and `cpu.stat` throttling.
pub fn read_cpu(cpuacct: Option<&Path>, cpu: Option<&Path>) -> Result<Option<V1CpuStat>> {
    let usage = match cpuacct {
        Some(dir) => read_cpuacct(dir)?,
        None => None,
    };
    let throttling = match cpu {
        Some(dir) => read_throttling(&dir.join("cpu.stat"))?,
        None => None,
    };
    if usage.is_none() && throttling.is_none() {
        return Ok(None);
    }
    Ok(Some(V1CpuStat { usage, throttling }))
}

fn read_cpuacct(dir: &Path) -> Result<Option<V1CpuUsage>> {
    let Some(total) = read_u64(&dir.join("cpuacct.usage"))? else {
        return Ok(None);
    };
    let mut user = read_u64(&dir.join("cpuacct.usage_user"))?;
    let mut kernel = read_u64(&dir.join("cpuacct.usage_sys"))?;
    if user.is_none() || kernel.is_none() {
        read_flat(&dir.join("cpuacct.stat"), |k, v| match k {
            "user" => user = user.or(Some(v.saturating_mul(NS_PER_USER_HZ))),
            "system" => kernel = kernel.or(Some(v.saturating_mul(NS_PER_USER_HZ))),
            _ => {}
        })?;
    }
    let per_cpu = read_u64_list(&dir.join("cpuacct.usage_percpu"))?.unwrap_or_default();
    Ok(Some(V1CpuUsage {
        total,
        kernel,
        user,
        per_cpu,
    }))
}

fn read_throttling(path: &Path) -> Result<Option<V1Throttle>> {
    let mut t = V1Throttle::default();
    let mut seen = 0u8;
    let found = read_flat(path, |k, v| match k {
        "nr_periods" => (t.periods, seen) = (v, seen | 1),
        "nr_throttled" => (t.throttled_periods, seen) = (v, seen | 2),
        "throttled_time" => (t.throttled_time, seen) = (v, seen | 4),
        "nr_bursts" => t.nr_bursts = Some(v),
        "burst_time" => t.burst_time = Some(v),
        _ => {}
    })?;
    if !found {
        return Ok(None);
    }
    if seen != 7 {
        return Err(MetricsError::parse(
            path,
            0,
            "missing nr_periods, nr_throttled or throttled_time",
        ));
    }
    Ok(Some(t))
}

/// Reads one page counter `PREFIX.{usage_in_bytes,limit_in_bytes,max_usage_in_bytes,failcnt}`.
fn read_entry(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>> {
    let file = |name: &str| dir.join(format!("{prefix}.{name}"));
    let Some(usage) = read_u64(&file("usage_in_bytes"))? else {
        return Ok(None);
    };
    Ok(Some(MemoryEntry {
        usage,
        limit: read_u64(&file("limit_in_bytes"))?,
        max: read_u64(&file("max_usage_in_bytes"))?,
        failcnt: read_u64(&file("failcnt"))?,
    }))
}

/// Reads only `PREFIX.usage_in_bytes` as an entry (the exposition needs no more).
fn read_usage_only(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>> {
    Ok(
        read_u64(&dir.join(format!("{prefix}.usage_in_bytes")))?.map(|usage| MemoryEntry {
            usage,
            ..MemoryEntry::default()
        }),
    )
}

/// Reads the `memory` controller's statistics of the cgroup directory `dir`. With
/// [`ReadOptions::exposition`] the `memsw`/`kmem`/`kmem.tcp` entries carry only their usage.
pub fn read_memory(dir: &Path, opts: &ReadOptions) -> Result<Option<V1MemoryStat>> {
    let mut m = V1MemoryStat::default();
    let stat_found = read_flat(&dir.join("memory.stat"), |k, v| {
        m.stat.set(k, v);
        m.raw.insert(k.to_string(), v);
    })?;
    m.usage = read_entry(dir, "memory")?;
    if !stat_found && m.usage.is_none() {
        return Ok(None);
    }
    let entry = if opts.exposition_only {
        read_usage_only
    } else {
        read_entry
    };
    m.swap = entry(dir, "memory.memsw")?;
    m.kernel = entry(dir, "memory.kmem")?;
    m.kernel_tcp = entry(dir, "memory.kmem.tcp")?;
    if let Some(usage) = &m.usage {
        let inactive = m.stat.total_inactive_file.or(m.stat.inactive_file);
        m.working_set = inactive.map(|i| usage.usage.saturating_sub(i));
    }
    Ok(Some(m))
}

/// Reads `memory.oom_control`.
pub fn read_oom_control(dir: &Path) -> Result<Option<V1OomControl>> {
    let mut o = V1OomControl::default();
    let found = read_flat(&dir.join("memory.oom_control"), |k, v| match k {
        "oom_kill_disable" => o.oom_kill_disable = v != 0,
        "under_oom" => o.under_oom = v != 0,
        "oom_kill" => o.oom_kill = Some(v),
        _ => {}
    })?;
    Ok(found.then_some(o))
}

/// Reads `pids.current` and `pids.max`.
pub fn read_pids(dir: &Path) -> Result<Option<PidsStat>> {
    let Some(current) = read_u64(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    Ok(Some(PidsStat {
        current,
        limit: crate::files::read_limit(&dir.join("pids.max"))?,
    }))
}

/// Parses a v1 blkio file: `MAJ:MIN OP VALUE` or `MAJ:MIN VALUE` lines and a `Total` line.
pub fn parse_blkio(path: &Path, text: &str) -> Result<Vec<BlkIoEntry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["Total", _] => {}
            [dev, value] => {
                let (major, minor) = parse_dev(path, i + 1, dev)?;
                out.push(BlkIoEntry {
                    op: String::new(),
                    major,
                    minor,
                    value: parse_u64(path, i + 1, value)?,
                });
            }
            [dev, op, value] => {
                let (major, minor) = parse_dev(path, i + 1, dev)?;
                out.push(BlkIoEntry {
                    op: (*op).to_string(),
                    major,
                    minor,
                    value: parse_u64(path, i + 1, value)?,
                });
            }
            _ => {
                return Err(MetricsError::parse(
                    path,
                    i + 1,
                    "expected MAJ:MIN [OP] VALUE",
                ));
            }
        }
    }
    Ok(out)
}

fn read_blkio_file(dir: &Path, name: &str) -> Result<Option<Vec<BlkIoEntry>>> {
    let path = dir.join(name);
    read_with(&path, |text| parse_blkio(&path, text))
}

/// Reads the blkio controller's recursive statistics.
///
/// The CFQ/BFQ-era `blkio.io_*_recursive` files are registered together by one policy, so when
/// `blkio.io_service_bytes_recursive` is absent the other five are not probed. With
/// [`ReadOptions::exposition`] only the two lists the exposition uses are read.
pub fn read_blkio(dir: &Path, opts: &ReadOptions) -> Result<Option<V1BlkIoStat>> {
    let mut s = V1BlkIoStat::default();
    let mut any = false;
    let mut take = |list: Option<Vec<BlkIoEntry>>| {
        any |= list.is_some();
        list.unwrap_or_default()
    };
    let service_bytes = read_blkio_file(dir, "blkio.io_service_bytes_recursive")?;
    let cfq = service_bytes.is_some();
    s.io_service_bytes_recursive = take(service_bytes);
    if cfq {
        s.io_serviced_recursive = take(read_blkio_file(dir, "blkio.io_serviced_recursive")?);
        if !opts.exposition_only {
            s.io_queued_recursive = take(read_blkio_file(dir, "blkio.io_queued_recursive")?);
            s.io_service_time_recursive =
                take(read_blkio_file(dir, "blkio.io_service_time_recursive")?);
            s.io_wait_time_recursive = take(read_blkio_file(dir, "blkio.io_wait_time_recursive")?);
            s.io_merged_recursive = take(read_blkio_file(dir, "blkio.io_merged_recursive")?);
            s.io_time_recursive = take(read_blkio_file(dir, "blkio.time_recursive")?);
            s.sectors_recursive = take(read_blkio_file(dir, "blkio.sectors_recursive")?);
        }
    }
    if s.io_service_bytes_recursive.is_empty() {
        s.io_service_bytes_recursive = take(read_blkio_file(
            dir,
            "blkio.throttle.io_service_bytes_recursive",
        )?);
    }
    if s.io_serviced_recursive.is_empty() {
        s.io_serviced_recursive = take(read_blkio_file(
            dir,
            "blkio.throttle.io_serviced_recursive",
        )?);
    }
    Ok(any.then_some(s))
}

/// Reads `hugetlb.<size>.*` (v1 names) for every page size present in `dir`.
pub fn read_hugetlb(dir: &Path) -> Result<Option<Vec<HugetlbStat>>> {
    let Some(sizes) = list_infix(dir, "hugetlb.", ".usage_in_bytes")? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(sizes.len());
    for size in sizes {
        let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
        let Some(usage) = read_u64(&file("usage_in_bytes"))? else {
            continue;
        };
        out.push(HugetlbStat {
            usage,
            max_usage: read_u64(&file("max_usage_in_bytes"))?,
            limit: read_u64(&file("limit_in_bytes"))?,
            failcnt: read_u64(&file("failcnt"))?,
            pagesize: size,
        });
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Parses a v1 `memory.stat` text into its map (exposed for tests and tools).
pub fn parse_memory_stat(path: &Path, text: &str) -> Result<BTreeMap<String, u64>> {
    let mut map = BTreeMap::new();
    for_each_flat(path, text, |k, v| {
        map.insert(k.to_string(), v);
    })?;
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_formats() {
        let p = Path::new("/b/blkio.throttle.io_service_bytes_recursive");
        let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n\
                    8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n";
        let e = parse_blkio(p, text).unwrap();
        assert_eq!(e.len(), 6);
        assert_eq!(
            e[1],
            BlkIoEntry {
                op: "Write".into(),
                major: 8,
                minor: 0,
                value: 8192
            }
        );
        let e = parse_blkio(Path::new("/b/blkio.sectors_recursive"), "259:0 16\n").unwrap();
        assert_eq!(e[0].op, "");
        assert_eq!((e[0].major, e[0].minor, e[0].value), (259, 0, 16));
        assert!(parse_blkio(p, "8:0 Read x\n").is_err());
        assert!(parse_blkio(p, "8:0 Read 1 2\n").is_err());
    }

    #[test]
    fn missing_controller_dirs_give_none() {
        let t = tempfile::tempdir().unwrap();
        let gone = t.path().join("gone");
        let paths = CgroupPaths::v1([
            ("cpu", gone.clone()),
            ("cpuacct", gone.clone()),
            ("memory", gone.clone()),
            ("pids", gone.clone()),
            ("blkio", gone.clone()),
            ("hugetlb", gone.clone()),
        ]);
        let m = read_v1(&paths, &ReadOptions::default()).unwrap();
        assert_eq!(m, V1Metrics::default());
    }

    #[test]
    fn cpuacct_stat_fallback_in_ticks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("cpuacct.usage"), "5000000000\n").unwrap();
        std::fs::write(d.join("cpuacct.stat"), "user 300\nsystem 100\n").unwrap();
        let u = read_cpuacct(d).unwrap().unwrap();
        assert_eq!(u.total, 5_000_000_000);
        assert_eq!(u.user, Some(3_000_000_000));
        assert_eq!(u.kernel, Some(1_000_000_000));
        assert!(u.per_cpu.is_empty());
    }

    #[test]
    fn cpu_stat_missing_keys_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cpu.stat"), "nr_periods 1\n").unwrap();
        let err = read_throttling(&t.path().join("cpu.stat")).unwrap_err();
        assert!(err.to_string().contains("cpu.stat"));
    }
}
