//! Exposition of fixture statistics: one schema for v1 and v2, exact samples, both text
//! formats, the README's name table, and `promtool check metrics`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_metrics::exposition::{DeviceNames, metric_names, render_with_devices};
use berth_metrics::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn stats(layout: &str, rel: &str, id: &str) -> ContainerStats {
    let h = Hierarchy::detect_at(fixtures().join(layout)).unwrap();
    ContainerStats {
        id: id.into(),
        namespace: "default".into(),
        metrics: read_metrics(&h.paths_for(rel).unwrap()).unwrap(),
    }
}

fn all() -> Vec<ContainerStats> {
    vec![
        stats("v1", "/berth-fixture", "c-v1"),
        stats("hybrid", "/berth-fixture", "c-hybrid"),
        stats("v2", "/berth/ctr-full", "c-v2"),
        stats("v2", "/berth/ctr-partial", "c-v2-partial"),
    ]
}

fn text(format: Format) -> String {
    render_with_devices(&all(), format, DeviceNames::new(fixtures().join("sys"))).unwrap()
}

/// Sample lines (no comments) of `text`.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// Metric names that have a sample for `id`.
fn names_for(text: &str, id: &str) -> BTreeSet<String> {
    let needle = format!("container_id=\"{id}\"");
    samples(text)
        .into_iter()
        .filter(|l| l.contains(&needle))
        .map(|l| l.split('{').next().unwrap().to_string())
        .collect()
}

#[test]
fn exact_samples_with_unit_conversion() {
    let t = text(Format::Prometheus);
    let s = samples(&t);
    let expect = [
        // v1: nanoseconds → seconds; v2: microseconds → seconds.
        r#"container_cpu_usage_seconds_total{container_id="c-v1",namespace="default"} 0.315912945"#,
        r#"container_cpu_usage_seconds_total{container_id="c-v2",namespace="default"} 2.465326"#,
        r#"container_cpu_throttled_seconds_total{container_id="c-v1",namespace="default"} 0.125389949"#,
        r#"container_cpu_throttled_seconds_total{container_id="c-v2",namespace="default"} 0.350123"#,
        r#"container_cpu_throttled_periods_total{container_id="c-v2",namespace="default"} 7"#,
        r#"container_cpu_per_cpu_usage_seconds_total{container_id="c-v1",namespace="default",cpu="1"} 0.199893143"#,
        r#"container_memory_usage_bytes{container_id="c-v1",namespace="default"} 344064"#,
        r#"container_memory_limit_bytes{container_id="c-v1",namespace="default"} 67108864"#,
        r#"container_memory_limit_bytes{container_id="c-v2",namespace="default"} 104857600"#,
        r#"container_memory_working_set_bytes{container_id="c-v2",namespace="default"} 44040192"#,
        r#"container_memory_anon_bytes{container_id="c-v1",namespace="default"} 135168"#,
        r#"container_memory_anon_bytes{container_id="c-v2",namespace="default"} 31457280"#,
        r#"container_memory_page_faults_total{container_id="c-v1",namespace="default"} 35338"#,
        r#"container_memory_major_page_faults_total{container_id="c-v2",namespace="default"} 42"#,
        r#"container_memory_max_events_total{container_id="c-v1",namespace="default"} 0"#,
        r#"container_memory_max_events_total{container_id="c-v2",namespace="default"} 5"#,
        r#"container_memory_oom_events_total{container_id="c-v2",namespace="default"} 2"#,
        r#"container_memory_oom_kills_total{container_id="c-v2",namespace="default"} 1"#,
        r#"container_pids_limit{container_id="c-v1",namespace="default"} 50"#,
        r#"container_cpu_pressure_full_seconds_total{container_id="c-hybrid",namespace="default"} 0.179452"#,
        r#"container_io_pressure_some_seconds_total{container_id="c-v2",namespace="default"} 0.7"#,
        r#"container_io_read_bytes_total{container_id="c-v1",namespace="default",device="vda",major="254",minor="0"} 8388608"#,
        r#"container_io_writes_total{container_id="c-v1",namespace="default",device="vda",major="254",minor="0"} 25"#,
        r#"container_io_write_bytes_total{container_id="c-v2",namespace="default",device="sda",major="8",minor="0"} 4194304"#,
        r#"container_io_discards_total{container_id="c-v2",namespace="default",device="",major="253",minor="0"} 1"#,
        r#"container_hugetlb_usage_bytes{container_id="c-hybrid",namespace="default",page_size="2MB"} 4194304"#,
        r#"container_hugetlb_max_usage_bytes{container_id="c-v1",namespace="default",page_size="2MB"} 6291456"#,
        r#"container_hugetlb_limit_bytes{container_id="c-v2",namespace="default",page_size="2MB"} 4194304"#,
        r#"container_hugetlb_max_events_total{container_id="c-hybrid",namespace="default",page_size="2MB"} 3"#,
    ];
    for line in expect {
        assert!(
            s.contains(&line),
            "missing sample:\n{line}\n--- got ---\n{t}"
        );
    }
    // Unlimited limits are omitted, never exported as 2^63 or u64::MAX.
    assert!(!t.contains("9223372036854771712") && !t.contains("18446744073709551615"));
    assert!(
        !s.iter()
            .any(|l| l.starts_with("container_memory_swap_limit_bytes"))
    );
    assert!(
        !s.iter()
            .any(|l| l.starts_with("container_hugetlb_limit_bytes")
                && l.contains("1GB")
                && l.contains("c-v2\""))
    );
}

#[test]
fn same_names_for_v1_and_v2() {
    let t = text(Format::Prometheus);
    let v1 = names_for(&t, "c-v1");
    let v2 = names_for(&t, "c-v2");
    let v1_only: BTreeSet<&str> = [
        "container_cpu_per_cpu_usage_seconds_total",
        "container_memory_under_oom",
        "container_hugetlb_max_usage_bytes",
    ]
    .into();
    let v2_only: BTreeSet<&str> = [
        "container_memory_swap_limit_bytes",
        "container_memory_kernel_stack_bytes",
        "container_memory_slab_bytes",
        "container_memory_low_events_total",
        "container_memory_high_events_total",
        "container_memory_oom_events_total",
        "container_memory_oom_group_kills_total",
        "container_cpu_pressure_some_seconds_total",
        "container_cpu_pressure_full_seconds_total",
        "container_memory_pressure_some_seconds_total",
        "container_memory_pressure_full_seconds_total",
        "container_io_pressure_some_seconds_total",
        "container_io_pressure_full_seconds_total",
        "container_io_discard_bytes_total",
        "container_io_discards_total",
    ]
    .into();
    for n in &v1 {
        assert!(
            v2.contains(n) || v1_only.contains(n.as_str()),
            "{n} only in v1"
        );
    }
    for n in &v2 {
        assert!(
            v1.contains(n) || v2_only.contains(n.as_str()),
            "{n} only in v2"
        );
    }
    // The hybrid container adds PSI (from the unified tree) to the v1 names.
    let hybrid = names_for(&t, "c-hybrid");
    assert!(hybrid.contains("container_cpu_pressure_some_seconds_total"));
    assert!(
        hybrid.is_superset(
            &v1.iter()
                .filter(|n| !n.starts_with("container_hugetlb_max_usage"))
                .cloned()
                .collect()
        )
    );
}

#[test]
fn counters_end_in_total_and_units_are_honest() {
    let t = text(Format::Prometheus);
    let mut types = 0;
    for line in t.lines().filter(|l| l.starts_with("# TYPE ")) {
        types += 1;
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                assert!(name.ends_with("_total"), "{name}");
                assert!(
                    !name.contains("_bytes_total") || name.starts_with("container_io_"),
                    "{name}"
                );
                assert!(
                    !name.contains("nanoseconds") && !name.contains("usec"),
                    "{name}"
                );
            }
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("unexpected type {other} for {name}"),
        }
        assert!(
            t.contains(&format!("# HELP {name} ")),
            "HELP line missing for {name}"
        );
    }
    assert!(types > 50, "only {types} families");
    // Every family name is one of the schema's names.
    let schema: BTreeSet<String> = metric_names().into_iter().collect();
    for line in samples(&t) {
        let name = line.split('{').next().unwrap();
        assert!(
            schema.contains(name) || name == "berth_metrics_read_errors_total",
            "{name} not in metric_names()"
        );
    }
}

#[test]
fn openmetrics_format() {
    let t = text(Format::OpenMetrics);
    assert!(t.ends_with("# EOF\n"), "{t}");
    assert!(t.contains("# TYPE container_cpu_usage_seconds counter\n"));
    assert!(t.contains("# UNIT container_cpu_usage_seconds seconds\n"));
    assert!(t.contains("# TYPE container_memory_usage_bytes gauge\n"));
    assert!(t.contains("# UNIT container_memory_usage_bytes bytes\n"));
    assert!(t.contains(
        r#"container_memory_oom_kills_total{container_id="c-v2",namespace="default"} 1"#
    ));
    assert_eq!(
        samples(&t).len(),
        samples(&text(Format::Prometheus)).len(),
        "same samples in both formats"
    );
    assert_eq!(
        Format::Prometheus.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text")
    );
}

#[test]
fn promtool_accepts_the_fixture_exposition() {
    common::promtool_check(&text(Format::Prometheus));
}

#[test]
fn openmetrics_reference_parser_accepts_the_fixture_exposition() {
    common::openmetrics_check(&text(Format::OpenMetrics));
}

#[test]
fn readme_maps_every_name() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in metric_names() {
        let row = format!("| `{name}");
        assert!(
            readme.contains(&format!("{row}`")) || readme.contains(&format!("{row}{{")),
            "README table lacks `{name}`"
        );
    }
}

#[test]
fn collector_reads_at_scrape_time_and_counts_failures() {
    use prometheus_client::registry::Registry;
    use std::sync::{Arc, Mutex};

    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("memory.current"), "garbage\n").unwrap();
    let h = Hierarchy::detect_at(fixtures().join("v2")).unwrap();
    let list = Arc::new(Mutex::new(vec![Container {
        id: "a".into(),
        namespace: "ns1".into(),
        cgroup: h.paths_for("/berth/ctr-full").unwrap(),
    }]));
    let source = list.clone();
    let collector = CgroupCollector::new(move || source.lock().unwrap().clone())
        .with_sys_root(fixtures().join("sys"));
    let collector = Arc::new(collector);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));

    let first = exposition::encode_registry(&registry, Format::Prometheus).unwrap();
    assert!(first.contains(r#"container_pids_current{container_id="a",namespace="ns1"} 7"#));
    assert!(first.contains("berth_metrics_read_errors_total 0\n"));

    // The list changes between scrapes; a broken container is left out and counted.
    list.lock().unwrap().push(Container {
        id: "broken".into(),
        namespace: "ns1".into(),
        cgroup: CgroupPaths::v2(&bad),
    });
    list.lock().unwrap().push(Container {
        id: "b".into(),
        namespace: "ns2".into(),
        cgroup: Hierarchy::detect_at(fixtures().join("v1"))
            .unwrap()
            .paths_for("/berth-fixture")
            .unwrap(),
    });
    let second = exposition::encode_registry(&registry, Format::Prometheus).unwrap();
    assert!(second.contains(r#"container_pids_current{container_id="b",namespace="ns2"} 2"#));
    assert!(!second.contains("broken"));
    assert!(second.contains("berth_metrics_read_errors_total 1\n"));
    assert_eq!(collector.read_errors(), 1);
    common::promtool_check(&second);
}

#[test]
fn parallel_scrape_keeps_the_source_order() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("pids.current"), "x\n").unwrap();
    let v1 = Hierarchy::detect_at(fixtures().join("v1")).unwrap();
    let v2 = Hierarchy::detect_at(fixtures().join("v2")).unwrap();
    let n = 3 * collector::PARALLEL_MIN;
    let list: Vec<Container> = (0..n)
        .map(|i| Container {
            id: format!("c{i:03}"),
            namespace: "ns".into(),
            cgroup: match i % 3 {
                0 => v1.paths_for("/berth-fixture").unwrap(),
                1 => v2.paths_for("/berth/ctr-full").unwrap(),
                _ if i == 5 => CgroupPaths::v2(&bad),
                _ => v2.paths_for("/berth/ctr-partial").unwrap(),
            },
        })
        .collect();
    for threads in [1, 2, 4] {
        let collector = CgroupCollector::new(list.clone()).with_threads(threads);
        let got = collector.scrape();
        let ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        let want: Vec<String> = (0..n)
            .filter(|i| *i != 5)
            .map(|i| format!("c{i:03}"))
            .collect();
        assert_eq!(ids, want, "threads={threads}");
        assert_eq!(collector.read_errors(), 1);
        assert!(matches!(got[0].metrics, Metrics::V1(_)));
        assert!(matches!(got[1].metrics, Metrics::V2(_)));
    }
}
