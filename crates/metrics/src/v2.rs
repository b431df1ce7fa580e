//! cgroup v2 readers (Documentation/admin-guide/cgroup-v2.rst).
//!
//! Files read from the cgroup directory: `cpu.stat`; `memory.{current,max,peak,stat,events,
//! swap.current,swap.max,swap.peak}`; `pids.{current,max}`; `io.stat`;
//! `hugetlb.<size>.{current,max,events}`; `{cpu,memory,io}.pressure`. They are read directly
//! (see [`crate::v1`] for why not through cgroups-rs). A file that is missing because its
//! controller is not enabled in the parent's `cgroup.subtree_control` gives `None` for its
//! figure.

use std::path::Path;

use crate::error::{MetricsError, Result};
use crate::files::{
    list_infix, nested_line, parse_dev, parse_u64, read_flat, read_limit, read_u64,
};
use crate::psi;
use crate::types::{
    HugetlbStat, IoEntry, IoStat, MemoryEvents, PidsStat, V2CpuStat, V2MemoryStat, V2Metrics,
};

/// Reads every v2 figure of the cgroup directory `dir`.
pub fn read_v2(dir: &Path) -> Result<V2Metrics> {
    Ok(V2Metrics {
        pids: read_pids(dir)?,
        cpu: read_cpu(dir)?,
        memory: read_memory(dir)?,
        memory_events: read_memory_events(dir)?,
        io: read_io(dir)?,
        hugetlb: read_hugetlb(dir)?,
        pressure: psi::read_pressure(dir)?,
    })
}

/// Reads `pids.current` and `pids.max`.
pub fn read_pids(dir: &Path) -> Result<Option<PidsStat>> {
    let Some(current) = read_u64(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    Ok(Some(PidsStat {
        current,
        limit: read_limit(&dir.join("pids.max"))?,
    }))
}

/// Reads `cpu.stat`.
pub fn read_cpu(dir: &Path) -> Result<Option<V2CpuStat>> {
    let path = dir.join("cpu.stat");
    let mut c = V2CpuStat::default();
    let mut seen = 0u8;
    let found = read_flat(&path, |k, v| match k {
        "usage_usec" => (c.usage_usec, seen) = (v, seen | 1),
        "user_usec" => (c.user_usec, seen) = (v, seen | 2),
        "system_usec" => (c.system_usec, seen) = (v, seen | 4),
        "nr_periods" => c.nr_periods = Some(v),
        "nr_throttled" => c.nr_throttled = Some(v),
        "throttled_usec" => c.throttled_usec = Some(v),
        "nr_bursts" => c.nr_bursts = Some(v),
        "burst_usec" => c.burst_usec = Some(v),
        _ => {}
    })?;
    if !found {
        return Ok(None);
    }
    if seen != 7 {
        return Err(MetricsError::parse(
            &path,
            0,
            "missing usage_usec, user_usec or system_usec",
        ));
    }
    Ok(Some(c))
}

/// Reads the memory controller's files.
pub fn read_memory(dir: &Path) -> Result<Option<V2MemoryStat>> {
    let mut m = V2MemoryStat::default();
    let stat_found = read_flat(&dir.join("memory.stat"), |k, v| {
        m.stat.set(k, v);
        m.raw.insert(k.to_string(), v);
    })?;
    m.usage = read_u64(&dir.join("memory.current"))?;
    if !stat_found && m.usage.is_none() {
        return Ok(None);
    }
    m.usage_limit = read_limit(&dir.join("memory.max"))?;
    m.max_usage = read_u64(&dir.join("memory.peak"))?;
    m.swap_usage = read_u64(&dir.join("memory.swap.current"))?;
    m.swap_limit = read_limit(&dir.join("memory.swap.max"))?;
    m.swap_max_usage = read_u64(&dir.join("memory.swap.peak"))?;
    if let (Some(usage), Some(inactive)) = (m.usage, m.stat.inactive_file) {
        m.working_set = Some(usage.saturating_sub(inactive));
    }
    Ok(Some(m))
}

/// Reads `memory.events`.
pub fn read_memory_events(dir: &Path) -> Result<Option<MemoryEvents>> {
    read_memory_events_file(&dir.join("memory.events"))
}

/// Reads a `memory.events`-format file (also used by the OOM watcher).
pub fn read_memory_events_file(path: &Path) -> Result<Option<MemoryEvents>> {
    let mut e = MemoryEvents::default();
    let found = read_flat(path, |k, v| match k {
        "low" => e.low = v,
        "high" => e.high = v,
        "max" => e.max = v,
        "oom" => e.oom = v,
        "oom_kill" => e.oom_kill = v,
        "oom_group_kill" => e.oom_group_kill = Some(v),
        _ => {}
    })?;
    Ok(found.then_some(e))
}

/// Parses `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…` per device.
/// Keys other than these six (e.g. `cost.*` from io.cost) are ignored.
pub fn parse_io_stat(path: &Path, text: &str) -> Result<IoStat> {
    let mut stat = IoStat::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (dev, pairs) = nested_line(path, i + 1, line)?;
        let (major, minor) = parse_dev(path, i + 1, dev)?;
        let mut e = IoEntry {
            major,
            minor,
            ..IoEntry::default()
        };
        for (k, v) in pairs {
            let slot = match k {
                "rbytes" => &mut e.rbytes,
                "wbytes" => &mut e.wbytes,
                "rios" => &mut e.rios,
                "wios" => &mut e.wios,
                "dbytes" => &mut e.dbytes,
                "dios" => &mut e.dios,
                _ => continue,
            };
            *slot = parse_u64(path, i + 1, v)?;
        }
        stat.usage.push(e);
    }
    Ok(stat)
}

/// Reads `io.stat`.
pub fn read_io(dir: &Path) -> Result<Option<IoStat>> {
    let path = dir.join("io.stat");
    crate::files::read_with(&path, |text| parse_io_stat(&path, text))
}

/// Reads `hugetlb.<size>.{current,max,events}` for each page size present in `dir`.
///
/// When the cgroup's `cgroup.controllers` exists and does not list `hugetlb`, the directory is
/// not listed at all (a cheap answer for the common case).
pub fn read_hugetlb(dir: &Path) -> Result<Option<Vec<HugetlbStat>>> {
    let enabled = crate::files::read_with(&dir.join("cgroup.controllers"), |text| {
        Ok(text.split_ascii_whitespace().any(|c| c == "hugetlb"))
    })?;
    if enabled == Some(false) {
        return Ok(None);
    }
    let Some(sizes) = list_infix(dir, "hugetlb.", ".current")? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(sizes.len());
    for size in sizes {
        let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
        let Some(usage) = read_u64(&file("current"))? else {
            continue;
        };
        let mut failcnt = None;
        read_flat(&file("events"), |k, v| {
            if k == "max" {
                failcnt = Some(v);
            }
        })?;
        out.push(HugetlbStat {
            usage,
            max_usage: None,
            limit: read_limit(&file("max"))?,
            failcnt,
            pagesize: size,
        });
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_documented_format() {
        let p = Path::new("/c/io.stat");
        let text = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
                    8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 \
                    dios=3021 cost.vrate=1.00\n";
        let s = parse_io_stat(p, text).unwrap();
        assert_eq!(s.usage.len(), 2);
        assert_eq!(
            s.usage[0],
            IoEntry {
                major: 8,
                minor: 16,
                rbytes: 1459200,
                wbytes: 314773504,
                rios: 192,
                wios: 353,
                dbytes: 0,
                dios: 0
            }
        );
        assert_eq!(s.usage[1].dios, 3021);
        assert!(parse_io_stat(p, "8:0 rbytes=x\n").is_err());
        assert!(parse_io_stat(p, "8:0 rbytes\n").is_err());
    }

    #[test]
    fn empty_dir_is_all_none() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_v2(t.path()).unwrap(), V2Metrics::default());
        assert_eq!(
            read_v2(&t.path().join("removed")).unwrap(),
            V2Metrics::default()
        );
    }

    #[test]
    fn cpu_stat_without_cpu_controller() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cpu.stat"),
            "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
        )
        .unwrap();
        let c = read_cpu(t.path()).unwrap().unwrap();
        assert_eq!((c.usage_usec, c.user_usec, c.system_usec), (10, 6, 4));
        assert_eq!(c.nr_periods, None);
    }
}
