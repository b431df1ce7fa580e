//! Fixture trees read into exact expected values.
//!
//! - `fixtures/v1`: cgroup v1 files captured on the project's hybrid host by
//!   `fixtures/capture-v1.sh` (cpu, cpuacct, memory, pids, blkio); `v1/hugetlb` is written in
//!   the v1 format because that host has no v1 hugetlb controller.
//! - `fixtures/hybrid`: the same v1 controllers (symlinks) plus a cgroup2 tree whose only
//!   controller is hugetlb; its `cpu.stat` and `*.pressure` were captured on the host, the
//!   `hugetlb.*` files are written in the kernel's documented format.
//! - `fixtures/v2`: files in the kernel's documented cgroup v2 formats.
//! - `fixtures/proc/<pid>/cgroup`: `/proc/<pid>/cgroup` of each layout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::path::{Path, PathBuf};

use berth_metrics::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn v1(m: Metrics) -> V1Metrics {
    match m {
        Metrics::V1(v) => v,
        Metrics::V2(_) => panic!("expected v1 metrics"),
    }
}

fn v2(m: Metrics) -> V2Metrics {
    match m {
        Metrics::V2(v) => v,
        Metrics::V1(_) => panic!("expected v2 metrics"),
    }
}

#[test]
fn v1_layout_is_detected_with_its_controllers() {
    let h = Hierarchy::detect_at(fixtures().join("v1")).unwrap();
    assert_eq!(h.mode(), CgroupMode::V1);
    let ctrls: Vec<&str> = h.controllers().collect();
    assert_eq!(
        ctrls,
        ["blkio", "cpu", "cpuacct", "hugetlb", "memory", "pids"]
    );
    assert!(h.unified_root().is_none());
}

#[test]
fn v1_captured_files_read_exactly() {
    let h = Hierarchy::detect_at(fixtures().join("v1")).unwrap();
    let m = v1(read_metrics(&h.paths_for("/berth-fixture").unwrap()).unwrap());

    let cpu = m.cpu.unwrap();
    let usage = cpu.usage.unwrap();
    assert_eq!(usage.total, 315_912_945);
    assert_eq!(usage.user, Some(68_000_000));
    assert_eq!(usage.kernel, Some(187_982_734));
    assert_eq!(usage.per_cpu, vec![116_019_802, 199_893_143]);
    assert_eq!(
        cpu.throttling.unwrap(),
        V1Throttle {
            periods: 9,
            throttled_periods: 5,
            throttled_time: 125_389_949,
            nr_bursts: Some(0),
            burst_time: Some(0),
        }
    );

    let mem = m.memory.unwrap();
    assert_eq!(
        mem.usage,
        Some(MemoryEntry {
            usage: 344_064,
            limit: Some(67_108_864),
            max: Some(3_334_144),
            failcnt: Some(0),
        })
    );
    assert_eq!(
        mem.swap,
        Some(MemoryEntry {
            usage: 344_064,
            limit: Some(9_223_372_036_854_771_712),
            max: Some(3_334_144),
            failcnt: Some(0),
        })
    );
    assert!(is_unlimited(mem.swap.as_ref().unwrap().limit.unwrap()));
    assert_eq!(mem.kernel.as_ref().unwrap().usage, 102_400);
    assert_eq!(mem.kernel.as_ref().unwrap().max, Some(2_879_488));
    assert_eq!(mem.kernel_tcp.as_ref().unwrap().usage, 0);
    assert_eq!(mem.stat.total_rss, Some(135_168));
    assert_eq!(mem.stat.total_cache, Some(0));
    assert_eq!(mem.stat.total_pgfault, Some(35_338));
    assert_eq!(mem.stat.total_pgmajfault, Some(0));
    assert_eq!(mem.stat.total_inactive_anon, Some(131_072));
    assert_eq!(mem.stat.hierarchical_memory_limit, Some(67_108_864));
    assert_eq!(mem.raw.len(), 42, "the whole memory.stat map is kept");
    assert_eq!(mem.raw.get("total_workingset_refault_file"), Some(&0));
    assert_eq!(mem.working_set, Some(344_064));

    assert_eq!(
        m.memory_oom_control,
        Some(V1OomControl {
            oom_kill_disable: false,
            under_oom: false,
            oom_kill: Some(0),
        })
    );
    assert_eq!(
        m.pids,
        Some(PidsStat {
            current: 2,
            limit: Some(50),
        })
    );

    // No CFQ/BFQ-recursive files with data: the throttle files are used.
    let blk = m.blkio.unwrap();
    let find = |list: &[BlkIoEntry], op: &str| {
        list.iter()
            .find(|e| e.op == op && e.major == 254 && e.minor == 0)
            .map(|e| e.value)
    };
    assert_eq!(
        find(&blk.io_service_bytes_recursive, "Read"),
        Some(8_388_608)
    );
    assert_eq!(
        find(&blk.io_service_bytes_recursive, "Write"),
        Some(8_425_472)
    );
    assert_eq!(find(&blk.io_serviced_recursive, "Read"), Some(8));
    assert_eq!(find(&blk.io_serviced_recursive, "Write"), Some(25));
    assert_eq!(
        blk.io_service_bytes_recursive.len(),
        6,
        "per-device Total kept, grand Total not"
    );
    assert!(blk.sectors_recursive.is_empty());

    let huge = m.hugetlb.unwrap();
    assert_eq!(
        huge,
        vec![
            HugetlbStat {
                pagesize: "2MB".into(),
                usage: 2_097_152,
                max_usage: Some(6_291_456),
                limit: Some(8_388_608),
                failcnt: Some(2),
            },
            HugetlbStat {
                pagesize: "1GB".into(),
                usage: 0,
                max_usage: Some(0),
                limit: Some(9_223_372_036_854_771_712),
                failcnt: Some(0),
            },
        ]
    );
    assert!(m.pressure.is_none(), "pure v1: no PSI");
}

#[test]
fn hybrid_layout_takes_psi_and_hugetlb_from_unified() {
    let h = Hierarchy::detect_at(fixtures().join("hybrid")).unwrap();
    assert_eq!(h.mode(), CgroupMode::Hybrid);
    assert_eq!(h.unified_controllers().unwrap(), vec!["hugetlb"]);
    assert!(h.controller_root("hugetlb").is_none());
    let paths = h.paths_for("berth-fixture").unwrap();
    let m = v1(read_metrics(&paths).unwrap());
    assert_eq!(m.cpu.unwrap().usage.unwrap().total, 315_912_945);
    let p = m.pressure.unwrap();
    let cpu = p.cpu.unwrap();
    assert_eq!(
        cpu.some,
        Some(PsiData {
            avg10: 1.63,
            avg60: 0.29,
            avg300: 0.06,
            total: 188_189,
        })
    );
    assert_eq!(cpu.full.unwrap().total, 179_452);
    assert_eq!(p.memory.unwrap().some.unwrap().total, 0);
    assert_eq!(p.io.unwrap().full.unwrap().total, 7_731);
    let huge = m.hugetlb.unwrap();
    assert_eq!(huge.len(), 2);
    assert_eq!(
        huge[0],
        HugetlbStat {
            pagesize: "2MB".into(),
            usage: 4_194_304,
            max_usage: None,
            limit: Some(UNLIMITED),
            failcnt: Some(3),
        }
    );
    assert_eq!(huge[1].pagesize, "1GB");
    assert_eq!(huge[1].limit, Some(2_147_483_648));
}

#[test]
fn v2_documented_formats_read_exactly() {
    let h = Hierarchy::detect_at(fixtures().join("v2")).unwrap();
    assert_eq!(h.mode(), CgroupMode::V2);
    let m = v2(read_metrics(&h.paths_for("/berth/ctr-full").unwrap()).unwrap());
    assert_eq!(
        m.cpu,
        Some(V2CpuStat {
            usage_usec: 2_465_326,
            user_usec: 1_538_571,
            system_usec: 926_755,
            nr_periods: Some(120),
            nr_throttled: Some(7),
            throttled_usec: Some(350_123),
            nr_bursts: Some(1),
            burst_usec: Some(2000),
        })
    );
    let mem = m.memory.unwrap();
    assert_eq!(mem.usage, Some(52_428_800));
    assert_eq!(mem.usage_limit, Some(104_857_600));
    assert_eq!(mem.max_usage, Some(73_400_320));
    assert_eq!(mem.swap_usage, Some(1_048_576));
    assert_eq!(mem.swap_limit, Some(UNLIMITED));
    assert_eq!(mem.swap_max_usage, Some(2_097_152));
    assert_eq!(mem.working_set, Some(52_428_800 - 8_388_608));
    assert_eq!(mem.stat.anon, Some(31_457_280));
    assert_eq!(mem.stat.file, Some(16_777_216));
    assert_eq!(mem.stat.kernel, Some(3_145_728));
    assert_eq!(mem.stat.pgfault, Some(123_456));
    assert_eq!(mem.stat.pgmajfault, Some(42));
    assert_eq!(mem.stat.thp_collapse_alloc, Some(1));
    assert_eq!(mem.raw.len(), 56);
    assert_eq!(
        mem.raw.get("zswpwb"),
        Some(&0),
        "untyped keys stay in the map"
    );
    assert_eq!(
        m.memory_events,
        Some(MemoryEvents {
            low: 0,
            high: 12,
            max: 5,
            oom: 2,
            oom_kill: 1,
            oom_group_kill: Some(0),
        })
    );
    assert_eq!(
        m.pids,
        Some(PidsStat {
            current: 7,
            limit: Some(100),
        })
    );
    let io = m.io.unwrap();
    assert_eq!(
        io.usage,
        vec![
            IoEntry {
                major: 8,
                minor: 0,
                rbytes: 1_048_576,
                wbytes: 4_194_304,
                rios: 32,
                wios: 64,
                dbytes: 0,
                dios: 0,
            },
            IoEntry {
                major: 253,
                minor: 0,
                rbytes: 4096,
                wbytes: 0,
                rios: 1,
                wios: 0,
                dbytes: 512,
                dios: 1,
            },
        ]
    );
    let huge = m.hugetlb.unwrap();
    assert_eq!(huge[0].pagesize, "2MB");
    assert_eq!(
        (huge[0].usage, huge[0].limit, huge[0].failcnt),
        (2_097_152, Some(4_194_304), Some(1))
    );
    assert_eq!(huge[1].limit, Some(UNLIMITED));
    let p = m.pressure.unwrap();
    assert_eq!(p.cpu.as_ref().unwrap().some.as_ref().unwrap().avg10, 12.5);
    assert_eq!(p.cpu.unwrap().full.unwrap().total, 1_234_567);
    assert_eq!(p.memory.unwrap().full.unwrap().total, 30_000);
    assert_eq!(p.io.unwrap().some.unwrap().total, 700_000);
}

#[test]
fn v2_missing_controllers_are_none_not_errors() {
    let root = fixtures().join("v2");
    let m = v2(read_metrics(&CgroupPaths::v2(root.join("berth/ctr-partial"))).unwrap());
    let cpu = m.cpu.unwrap();
    assert_eq!(
        (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
        (1000, 600, 400)
    );
    assert_eq!(cpu.nr_throttled, None);
    assert!(m.memory.is_none());
    assert!(m.memory_events.is_none());
    assert!(m.pids.is_none());
    assert!(m.io.is_none());
    assert!(m.hugetlb.is_none());
    let p = m.pressure.unwrap();
    assert_eq!(p.cpu.unwrap().some.unwrap().total, 15);
    assert!(p.memory.is_none() && p.io.is_none());
    // A cgroup that does not exist at all reads as all-None.
    let gone = v2(read_metrics(&CgroupPaths::v2(root.join("berth/nope"))).unwrap());
    assert_eq!(gone, V2Metrics::default());
}

#[test]
fn by_pid_on_each_layout() {
    let proc_root = fixtures().join("proc");
    let v1h = Hierarchy::detect_at(fixtures().join("v1")).unwrap();
    let m = v1(read_metrics_for_pid(&v1h, Some(&proc_root), 100).unwrap());
    assert_eq!(m.memory.unwrap().usage.unwrap().usage, 344_064);
    assert!(
        m.hugetlb.is_none(),
        "/proc/100/cgroup names no hugetlb hierarchy"
    );
    assert!(m.pressure.is_none());

    let v2h = Hierarchy::detect_at(fixtures().join("v2")).unwrap();
    let paths = v2h.paths_for_pid(Some(&proc_root), 200).unwrap();
    assert_eq!(paths, CgroupPaths::v2(fixtures().join("v2/berth/ctr-full")));
    let m = v2(read_metrics(&paths).unwrap());
    assert_eq!(m.pids.unwrap().current, 7);

    let hh = Hierarchy::detect_at(fixtures().join("hybrid")).unwrap();
    let paths = hh.paths_for_pid(Some(&proc_root), 300).unwrap();
    assert_eq!(
        paths.unified(),
        Some(fixtures().join("hybrid/unified/berth-fixture").as_path())
    );
    assert_eq!(
        paths.controller("memory"),
        Some(fixtures().join("hybrid/memory/berth-fixture").as_path())
    );
    assert!(
        paths.controller("freezer").is_none(),
        "not in the fixture tree"
    );
    let m = v1(read_metrics(&paths).unwrap());
    assert_eq!(
        m.pressure.unwrap().cpu.unwrap().full.unwrap().total,
        179_452
    );
    assert_eq!(m.hugetlb.unwrap()[0].usage, 4_194_304);

    let err = read_metrics_for_pid(&v1h, Some(&proc_root), 999_999).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(
        d.join("cpu.stat"),
        "usage_usec 1\nuser_usec 1\nsystem_usec 1\n",
    )
    .unwrap();
    std::fs::write(d.join("memory.current"), "12 MiB\n").unwrap();
    let err = read_metrics(&CgroupPaths::v2(d)).unwrap_err();
    assert!(matches!(err, MetricsError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("memory.current"), "{err}");

    std::fs::write(d.join("memory.current"), "12\n").unwrap();
    std::fs::write(d.join("io.stat"), "8:0 rbytes=1 wbytes=two\n").unwrap();
    let err = read_metrics(&CgroupPaths::v2(d)).unwrap_err();
    assert!(err.to_string().contains("io.stat"), "{err}");

    std::fs::remove_file(d.join("io.stat")).unwrap();
    std::fs::write(d.join("memory.pressure"), "some avg10=zero\n").unwrap();
    let err = read_metrics(&CgroupPaths::v2(d)).unwrap_err();
    assert!(err.to_string().contains("memory.pressure"), "{err}");

    let v1dir = t.path().join("v1");
    std::fs::create_dir(&v1dir).unwrap();
    std::fs::write(v1dir.join("memory.usage_in_bytes"), "-5\n").unwrap();
    let err = read_metrics(&CgroupPaths::v1([("memory", &v1dir)])).unwrap_err();
    assert!(err.to_string().contains("memory.usage_in_bytes"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[test]
fn stats_round_trip_through_json() {
    let h = Hierarchy::detect_at(fixtures().join("v2")).unwrap();
    let m = read_metrics(&h.paths_for("/berth/ctr-full").unwrap()).unwrap();
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains(r#""version":"v2""#), "{json}");
    let back: Metrics = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let h = Hierarchy::detect_at(fixtures().join("hybrid")).unwrap();
    let m = read_metrics(&h.paths_for("/berth-fixture").unwrap()).unwrap();
    let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}
