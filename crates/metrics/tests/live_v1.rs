//! Live tests on a cgroup v1 / hybrid host (root). Every cgroup has a unique name and is
//! removed by a Drop guard (members killed first); child processes are killed on drop.
//! Outside CI they skip with a reason when not root or not on a v1 host; under `CI=true` that
//! is a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod common;

use std::time::{Duration, Instant};

use berth_metrics::exposition::encode_registry;
use berth_metrics::*;
use common::{KillOnDrop, TestCgroup, V1_CONTROLLERS, can_make_v1_cgroups};

fn v1(m: Metrics) -> V1Metrics {
    match m {
        Metrics::V1(v) => v,
        Metrics::V2(_) => panic!("expected v1 metrics on this host"),
    }
}

fn read(cg: &TestCgroup) -> V1Metrics {
    let h = Hierarchy::detect().unwrap();
    v1(read_metrics(&h.paths_for(&cg.name).unwrap()).unwrap())
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs` seconds.
fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn host_detection_matches_the_host() {
    if !can_make_v1_cgroups() {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    assert_ne!(h.mode(), CgroupMode::V2);
    for c in V1_CONTROLLERS {
        assert!(h.controller_root(c).is_some(), "{c} not detected");
    }
    let unified = std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").is_file();
    assert_eq!(h.mode() == CgroupMode::Hybrid, unified);
}

#[test]
fn memory_and_pids_limits_are_read_back() {
    if !can_make_v1_cgroups() {
        return;
    }
    let cg = TestCgroup::create("limit", &V1_CONTROLLERS, true);
    cg.set("memory", "memory.limit_in_bytes", "50331648");
    cg.set("pids", "pids.max", "42");
    let m = read(&cg);
    let mem = m.memory.unwrap();
    assert_eq!(mem.usage.as_ref().unwrap().limit, Some(50_331_648));
    assert_eq!(mem.stat.hierarchical_memory_limit, Some(50_331_648));
    assert_eq!(m.pids.unwrap().limit, Some(42));
    assert!(!m.memory_oom_control.unwrap().under_oom);

    // The same limit through the exposition; an unset limit is absent, not a huge number.
    let stats = [ContainerStats {
        id: cg.name.clone(),
        namespace: "default".into(),
        metrics: Metrics::V1(read(&cg)),
    }];
    let text = render(&stats, Format::Prometheus).unwrap();
    let line = format!(
        "container_memory_limit_bytes{{container_id=\"{}\",namespace=\"default\"}} 50331648",
        cg.name
    );
    assert!(text.contains(&line), "{text}");
    cg.set("memory", "memory.limit_in_bytes", "-1");
    let stats = [ContainerStats {
        id: cg.name.clone(),
        namespace: "default".into(),
        metrics: Metrics::V1(read(&cg)),
    }];
    let text = render(&stats, Format::Prometheus).unwrap();
    assert!(!text.contains("container_memory_limit_bytes{"), "{text}");
}

#[test]
fn busy_loop_raises_cpu_usage_and_pid_lookup_finds_the_cgroup() {
    if !can_make_v1_cgroups() {
        return;
    }
    let cg = TestCgroup::create("cpu", &V1_CONTROLLERS, true);
    let before = read(&cg).cpu.unwrap().usage.unwrap().total;
    let child = KillOnDrop(cg.spawn_sh("while :; do :; done"));
    let usage = wait_for(20, || {
        let u = read(&cg).cpu.unwrap().usage.unwrap();
        (u.total >= before + 200_000_000).then_some(u)
    })
    .expect("cpu usage did not rise by 200 ms within 20 s");
    assert!(usage.user.unwrap() > 0);
    let per_cpu: u64 = usage.per_cpu.iter().sum();
    assert!(
        per_cpu > 0 && per_cpu <= usage.total + 50_000_000,
        "{usage:?}"
    );
    assert!(read(&cg).pids.unwrap().current >= 1);

    // By pid: /proc/<pid>/cgroup leads to the same cgroup directories.
    let h = Hierarchy::detect().unwrap();
    let by_pid = h.paths_for_pid(None, child.0.id()).unwrap();
    assert_eq!(
        by_pid.controller("cpuacct"),
        Some(cg.dir("cpuacct").as_path())
    );
    assert_eq!(
        by_pid.controller("memory"),
        Some(cg.dir("memory").as_path())
    );
    if h.mode() == CgroupMode::Hybrid {
        assert_eq!(by_pid.unified(), Some(cg.dir("unified").as_path()));
    }
    let m = v1(read_metrics_for_pid(&h, None, child.0.id()).unwrap());
    assert!(m.cpu.unwrap().usage.unwrap().total >= usage.total);
}

#[test]
fn oom_raises_the_counter_and_fires_the_notification() {
    if !can_make_v1_cgroups() {
        return;
    }
    let cg = TestCgroup::create("oom", &["memory"], false);
    cg.set("memory", "memory.limit_in_bytes", "33554432");
    let h = Hierarchy::detect().unwrap();
    let paths = h.paths_for(&cg.name).unwrap();
    let (watcher, events) = OomWatcher::channel(&paths).unwrap();
    assert!(watcher.is_running());
    // `tail` keeps an unterminated line in memory: it grows past the 32 MiB limit.
    let child = KillOnDrop(cg.spawn_sh("head -c 268435456 /dev/zero | tail -n 1 >/dev/null"));
    let ev = events
        .recv_timeout(Duration::from_secs(60))
        .expect("no OOM notification within 60 s");
    assert_eq!(ev.cgroup, cg.dir("memory"));
    // v1 signals the eventfd when the OOM is detected, before the victim is killed, so the
    // count read at that moment may not include this kill yet; it is reported all the same.
    assert!(ev.oom_kills.is_some(), "{ev:?}");
    let kills = wait_for(10, || {
        let o = read(&cg).memory_oom_control.unwrap();
        o.oom_kill.filter(|k| *k >= 1)
    })
    .expect("oom_kill counter did not rise");
    assert!(kills >= 1);
    assert!(oom::oom_kills(&paths).unwrap().unwrap() >= kills);
    let m = read(&cg);
    assert!(m.memory.unwrap().usage.unwrap().failcnt.unwrap() > 0);
    drop(child);

    // The exposition shows the kill as a counter.
    let collector = CgroupCollector::new(vec![Container {
        id: "oom".into(),
        namespace: "t".into(),
        cgroup: paths.clone(),
    }]);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let text = encode_registry(&registry, Format::Prometheus).unwrap();
    let prefix = "container_memory_oom_kills_total{container_id=\"oom\",namespace=\"t\"} ";
    let value: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("oom kill sample")
        .parse()
        .unwrap();
    assert!(value >= 1, "{text}");

    // Removing the cgroup ends the notification stream (after any events still queued).
    drop(cg);
    let end = loop {
        match events.recv_timeout(Duration::from_secs(10)) {
            Ok(ev) => assert!(ev.oom_kills.is_some()),
            Err(e) => break e,
        }
    };
    assert_eq!(
        end,
        std::sync::mpsc::RecvTimeoutError::Disconnected,
        "stream did not end on cgroup removal"
    );
    assert!(
        wait_for(5, || (!watcher.is_running()).then_some(())).is_some(),
        "watcher thread still running"
    );
    drop(watcher);
}

#[test]
fn hybrid_host_reports_psi_from_the_unified_tree() {
    if !can_make_v1_cgroups() {
        return;
    }
    let h = Hierarchy::detect().unwrap();
    if h.mode() != CgroupMode::Hybrid {
        eprintln!("SKIP: not a hybrid host");
        return;
    }
    let cg = TestCgroup::create("psi", &V1_CONTROLLERS, true);
    // Three busy loops on fewer cores stall on cpu.
    let _child =
        KillOnDrop(cg.spawn_sh("while :; do :; done & while :; do :; done & while :; do :; done"));
    let some = wait_for(20, || {
        let p = read(&cg).pressure?;
        let total = p.cpu?.some?.total;
        (total > 0).then_some(total)
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores <= 2 {
        assert!(
            some.is_some(),
            "no cpu pressure with 3 busy loops on {cores} cpus"
        );
    }
    let p = read(&cg).pressure.unwrap();
    assert!(p.memory.is_some() && p.io.is_some());
}

#[test]
fn promtool_accepts_the_live_exposition() {
    if !can_make_v1_cgroups() {
        return;
    }
    let a = TestCgroup::create("prom-a", &V1_CONTROLLERS, true);
    let b = TestCgroup::create("prom-b", &V1_CONTROLLERS, true);
    a.set("memory", "memory.limit_in_bytes", "67108864");
    let _busy = KillOnDrop(a.spawn_sh("while :; do :; done"));
    let _idle = KillOnDrop(b.spawn_sh("exec sleep 60"));
    let h = Hierarchy::detect().unwrap();
    let list = vec![
        Container {
            id: a.name.clone(),
            namespace: "default".into(),
            cgroup: h.paths_for(&a.name).unwrap(),
        },
        Container {
            id: b.name.clone(),
            namespace: "other".into(),
            cgroup: h.paths_for(&b.name).unwrap(),
        },
    ];
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(CgroupCollector::new(list)));
    std::thread::sleep(Duration::from_millis(100));
    let text = encode_registry(&registry, Format::Prometheus).unwrap();
    assert!(text.contains(&format!(
        "container_cpu_usage_seconds_total{{container_id=\"{}\"",
        a.name
    )));
    assert!(text.contains(&format!(
        "container_pids_current{{container_id=\"{}\",namespace=\"other\"}} 1",
        b.name
    )));
    common::promtool_check(&text);
    let om = encode_registry(&registry, Format::OpenMetrics).unwrap();
    assert!(om.ends_with("# EOF\n"));
    common::openmetrics_check(&om);
}

#[test]
fn figures_agree_with_cgroups_rs() {
    use cgroups_rs::fs::cpuacct::CpuAcctController;
    use cgroups_rs::fs::memory::MemController;
    use cgroups_rs::fs::pid::PidController;
    use cgroups_rs::fs::{Cgroup, MaxValue, hierarchies};

    if !can_make_v1_cgroups() {
        return;
    }
    let cg = TestCgroup::create("crs", &V1_CONTROLLERS, false);
    cg.set("memory", "memory.limit_in_bytes", "41943040");
    cg.set("pids", "pids.max", "17");
    // Run something, then let it exit so the figures stop moving.
    let mut child = cg.spawn_sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done");
    assert!(child.wait().unwrap().success());

    let ours = read(&cg);
    let theirs = Cgroup::load(hierarchies::auto(), &cg.name);
    let mem: &MemController = theirs.controller_of().unwrap();
    let m = mem.memory_stat();
    let our_mem = ours.memory.unwrap();
    let usage = our_mem.usage.unwrap();
    assert_eq!(usage.limit, Some(m.limit_in_bytes as u64));
    assert_eq!(usage.max, Some(m.max_usage_in_bytes));
    assert_eq!(usage.failcnt, Some(m.fail_cnt));
    assert_eq!(our_mem.stat.total_pgfault, Some(m.stat.total_pgfault));
    let cpu: &CpuAcctController = theirs.controller_of().unwrap();
    assert_eq!(ours.cpu.unwrap().usage.unwrap().total, cpu.cpuacct().usage);
    let pids: &PidController = theirs.controller_of().unwrap();
    assert_eq!(pids.get_pid_max().unwrap(), MaxValue::Value(17));
    assert_eq!(ours.pids.unwrap().limit, Some(17));
}

#[test]
fn open_file_cache_follows_live_values_and_recreated_cgroups() {
    if !can_make_v1_cgroups() {
        return;
    }
    let name = common::unique_name("fdcache");
    let h = Hierarchy::detect().unwrap();
    let paths = h.paths_for(&name).unwrap();
    let cg = TestCgroup::create_named(name.clone(), &V1_CONTROLLERS, true);
    let list = std::sync::Arc::new(std::sync::Mutex::new(vec![Container {
        id: "c".into(),
        namespace: "n".into(),
        cgroup: paths.clone(),
    }]));
    let source = list.clone();
    let collector =
        CgroupCollector::new(move || source.lock().unwrap().clone()).with_open_files(1000);
    let usage = |s: &[ContainerStats]| match &s[0].metrics {
        Metrics::V1(m) => m.cpu.as_ref().unwrap().usage.as_ref().unwrap().total,
        Metrics::V2(_) => panic!("v1 expected"),
    };
    let first = usage(&collector.scrape());
    let open = collector.open_files().unwrap().len();
    assert!(open >= 15, "only {open} files kept open");
    let child = KillOnDrop(cg.spawn_sh("while :; do :; done"));
    // Values read through the cached fds move.
    let later = wait_for(20, || {
        let u = usage(&collector.scrape());
        (u >= first + 100_000_000).then_some(u)
    })
    .expect("cached reads did not see cpu usage rise");
    assert!(later > first);
    assert_eq!(
        collector.open_files().unwrap().len(),
        open,
        "fds reused, not reopened"
    );
    drop(child);
    drop(cg);

    // The same path re-created: the stale fds are dropped and the new cgroup is read.
    let cg2 = TestCgroup::create_named(name, &V1_CONTROLLERS, true);
    let s = collector.scrape();
    assert_eq!(s.len(), 1);
    assert!(usage(&s) < later, "read the removed cgroup's figures");
    match &s[0].metrics {
        Metrics::V1(m) => assert_eq!(m.pids.as_ref().unwrap().current, 0),
        Metrics::V2(_) => unreachable!(),
    }
    assert_eq!(collector.read_errors(), 0);

    // Containers that leave the source have their files closed after the next scrape.
    list.lock().unwrap().clear();
    assert!(collector.scrape().is_empty());
    assert!(collector.open_files().unwrap().is_empty());
    drop(cg2);
}

#[test]
fn unified_tree_of_a_hybrid_host_reads_as_v2() {
    if !can_make_v1_cgroups() {
        return;
    }
    let unified_root = std::path::Path::new("/sys/fs/cgroup/unified");
    if !unified_root.join("cgroup.controllers").is_file() {
        eprintln!("SKIP: no cgroup2 tree at /sys/fs/cgroup/unified");
        return;
    }
    // The cgroup2 mount alone is a v2 layout: detection, pid lookup and the v2 readers run on
    // the real kernel files (cpu.stat and PSI exist without any controller enabled).
    let h = Hierarchy::detect_at(unified_root).unwrap();
    assert_eq!(h.mode(), CgroupMode::V2);
    let cg = TestCgroup::create("v2view", &[], true);
    let dir = cg.dir("unified");
    let child = KillOnDrop(cg.spawn_sh("while :; do :; done"));
    let paths = h.paths_for_pid(None, child.0.id()).unwrap();
    assert_eq!(paths, CgroupPaths::v2(&dir));
    let cpu = wait_for(20, || match read_metrics(&paths).unwrap() {
        Metrics::V2(m) => m.cpu.filter(|c| c.usage_usec >= 100_000),
        Metrics::V1(_) => panic!("v2 expected"),
    })
    .expect("v2 cpu.stat usage did not rise");
    assert!(
        cpu.user_usec + cpu.system_usec <= cpu.usage_usec + 10_000,
        "{cpu:?}"
    );
    let m = match read_metrics(&paths).unwrap() {
        Metrics::V2(m) => m,
        Metrics::V1(_) => unreachable!(),
    };
    assert!(m.pressure.as_ref().unwrap().cpu.is_some());
    let enabled = h.unified_controllers().unwrap();
    if !enabled.iter().any(|c| c == "memory") {
        assert!(m.memory.is_none() && m.memory_events.is_none());
        // No memory.events: there is nothing to watch.
        let err = OomWatcher::spawn(&paths, |_| {}).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    if !enabled.iter().any(|c| c == "pids") {
        assert!(m.pids.is_none());
    }
    let text = render(
        &[ContainerStats {
            id: "v2view".into(),
            namespace: "default".into(),
            metrics: Metrics::V2(m),
        }],
        Format::Prometheus,
    )
    .unwrap();
    assert!(text.contains("container_cpu_usage_seconds_total{container_id=\"v2view\""));
    common::promtool_check(&text);
}
