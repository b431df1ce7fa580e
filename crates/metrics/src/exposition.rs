//! One Prometheus schema for cgroup v1 and v2.
//!
//! Each container's [`Metrics`] (v1 or v2 shaped) is first normalised into the same set of
//! figures — one name per concept, whichever cgroup version it came from — and then encoded
//! with `prometheus-client`, family by family. The rules (fixing containerd's warts, see
//! `README.md` for the name table):
//! - times are `_seconds` (v1 ns ÷ 10⁹, v2 µs ÷ 10⁶), sizes `_bytes`;
//! - monotonic figures are counters and end in `_total` (the encoder appends it); page faults
//!   and events are counts, never `_bytes`;
//! - v1 memory figures use the hierarchical `total_*` keys of `memory.stat`, which match the
//!   hierarchical v2 `memory.stat`;
//! - a limit that is unlimited (`max`) is **omitted** rather than exported as a huge number
//!   (absent series = no limit);
//! - a family is written only if at least one container has a value for it;
//! - every sample carries `container_id` and `namespace`; per-device samples add `device`
//!   (resolved through `/sys/dev/block/MAJ:MIN`, empty when unknown), `major`, `minor`;
//!   per-cpu samples add `cpu`; hugetlb samples add `page_size`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use crate::schema::metric_names;
use crate::schema::{Def, Flat, Huge, Io, SCALARS, UnitKind, Val};
use crate::types::Metrics;

/// The statistics of one container, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Value of the `container_id` label.
    pub id: String,
    /// Value of the `namespace` label.
    pub namespace: String,
    /// The statistics.
    pub metrics: Metrics,
}

/// Text format of an exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 ([`Format::content_type`]).
    Prometheus,
    /// OpenMetrics 1.0 text (ends with `# EOF`).
    OpenMetrics,
}

impl Format {
    /// The HTTP `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes a registry in `format`.
pub fn encode_registry(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(64 * 1024);
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// Renders already-read statistics (e.g. for a CLI's `--prometheus`) in `format`, resolving
/// device names under `/sys`.
pub fn render(stats: &[ContainerStats], format: Format) -> Result<String, std::fmt::Error> {
    render_with_devices(stats, format, DeviceNames::default())
}

/// Like [`render`], resolving device names with `devices`.
pub fn render_with_devices(
    stats: &[ContainerStats],
    format: Format,
    devices: DeviceNames,
) -> Result<String, std::fmt::Error> {
    #[derive(Debug)]
    struct Fixed(Vec<ContainerStats>, DeviceNames);
    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_stats(&mut encoder, &self.0, &self.1)
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(stats.to_vec(), devices)));
    encode_registry(&registry, format)
}

/// `(major, minor)` → kernel device name.
type DeviceCache = HashMap<(u64, u64), Arc<str>>;

/// Resolves block device numbers to kernel names (`8:0` → `sda`) through
/// `SYS/dev/block/MAJ:MIN`, caching the answers. Thread-safe.
#[derive(Debug, Clone)]
pub struct DeviceNames {
    sys_root: PathBuf,
    cache: Arc<Mutex<DeviceCache>>,
}

impl Default for DeviceNames {
    fn default() -> Self {
        DeviceNames::new("/sys")
    }
}

impl DeviceNames {
    /// A resolver reading `sys_root/dev/block`.
    pub fn new(sys_root: impl Into<PathBuf>) -> Self {
        DeviceNames {
            sys_root: sys_root.into(),
            cache: Arc::default(),
        }
    }

    /// The kernel name of device `major:minor`, or an empty string when unknown.
    pub fn name(&self, major: u64, minor: u64) -> Arc<str> {
        if let Ok(cache) = self.cache.lock()
            && let Some(n) = cache.get(&(major, minor))
        {
            return n.clone();
        }
        let link = self.sys_root.join(format!("dev/block/{major}:{minor}"));
        let name: Arc<str> = std::fs::read_link(&link)
            .ok()
            .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(Arc::from))
            .unwrap_or_else(|| Arc::from(""));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert((major, minor), name.clone());
        }
        name
    }
}

/// The labels of one sample: `container_id`, `namespace` and the family's extra labels.
struct Labels<'a> {
    id: &'a str,
    namespace: &'a str,
    extra: &'a [(&'static str, &'a str)],
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("container_id", self.id).encode(encoder.encode_label())?;
        ("namespace", self.namespace).encode(encoder.encode_label())?;
        for (k, v) in self.extra {
            (*k, *v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn metric_type(counter: bool) -> MetricType {
    if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    }
}

/// Writes one family: a descriptor, then one sample per `(labels, value)`.
fn family<'a, I>(encoder: &mut DescriptorEncoder, def: &Def, samples: I) -> std::fmt::Result
where
    I: Iterator<Item = (Labels<'a>, Val)>,
{
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let unit = def.unit.map(UnitKind::unit);
    let mut metric =
        encoder.encode_descriptor(def.name, def.help, unit, metric_type(def.counter))?;
    for (labels, value) in samples {
        let mut enc = metric.encode_family(&labels)?;
        match (def.counter, value) {
            (true, Val::U(v)) => enc.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            (true, Val::F(v)) => enc.encode_counter::<NoLabelSet, _, f64>(&v, None)?,
            (false, Val::U(v)) => enc.encode_gauge(&v)?,
            (false, Val::F(v)) => enc.encode_gauge(&v)?,
        }
    }
    Ok(())
}

/// Encodes the families of all `stats` into `encoder` (for use inside a
/// [`Collector`]).
pub fn encode_stats(
    encoder: &mut DescriptorEncoder,
    stats: &[ContainerStats],
    devices: &DeviceNames,
) -> std::fmt::Result {
    let flats: Vec<Flat> = stats
        .iter()
        .map(|s| Flat::from_metrics(&s.metrics))
        .collect();
    let both = || stats.iter().zip(flats.iter());

    for (i, def) in SCALARS.iter().enumerate() {
        family(
            encoder,
            def,
            both().filter_map(|(s, f)| {
                let (id, namespace) = (s.id.as_str(), s.namespace.as_str());
                f.scalars[i].map(|v| {
                    (
                        Labels {
                            id,
                            namespace,
                            extra: &[],
                        },
                        v,
                    )
                })
            }),
        )?;
    }

    // Per-cpu usage: label values are prepared up front so the label slices can borrow them.
    let cpu_names: Vec<String> = (0..flats
        .iter()
        .map(|f| f.per_cpu_seconds.len())
        .max()
        .unwrap_or(0))
        .map(|i| i.to_string())
        .collect();
    let per_cpu_labels: Vec<Vec<[(&'static str, &str); 1]>> = flats
        .iter()
        .map(|f| {
            (0..f.per_cpu_seconds.len())
                .map(|i| [("cpu", cpu_names[i].as_str())])
                .collect()
        })
        .collect();
    family(
        encoder,
        &Def {
            name: "container_cpu_per_cpu_usage",
            help: "CPU time consumed on each cpu (cgroup v1 only).",
            unit: Some(UnitKind::Seconds),
            counter: true,
        },
        both()
            .zip(per_cpu_labels.iter())
            .flat_map(|((s, f), labels)| {
                let (id, namespace) = (s.id.as_str(), s.namespace.as_str());
                f.per_cpu_seconds
                    .iter()
                    .zip(labels.iter())
                    .map(move |(v, l)| {
                        (
                            Labels {
                                id,
                                namespace,
                                extra: l,
                            },
                            Val::F(*v),
                        )
                    })
            }),
    )?;

    encode_io(encoder, stats, &flats, devices)?;
    encode_hugetlb(encoder, stats, &flats)
}

type IoField = fn(&Io) -> Option<u64>;

fn encode_io(
    encoder: &mut DescriptorEncoder,
    stats: &[ContainerStats],
    flats: &[Flat],
    devices: &DeviceNames,
) -> std::fmt::Result {
    // Label values per (container, device): device name, major, minor.
    let values: Vec<Vec<(Arc<str>, String, String)>> = flats
        .iter()
        .map(|f| {
            f.io.iter()
                .map(|d| {
                    (
                        devices.name(d.major, d.minor),
                        d.major.to_string(),
                        d.minor.to_string(),
                    )
                })
                .collect()
        })
        .collect();
    let labels: Vec<Vec<[(&'static str, &str); 3]>> = values
        .iter()
        .map(|per| {
            per.iter()
                .map(|(dev, maj, min)| {
                    [
                        ("device", &**dev),
                        ("major", maj.as_str()),
                        ("minor", min.as_str()),
                    ]
                })
                .collect()
        })
        .collect();
    let fams: [(&'static str, &'static str, Option<UnitKind>, IoField); 6] = [
        (
            "container_io_read",
            "Bytes read from the device.",
            Some(UnitKind::Bytes),
            |d| d.read_bytes,
        ),
        (
            "container_io_write",
            "Bytes written to the device.",
            Some(UnitKind::Bytes),
            |d| d.write_bytes,
        ),
        (
            "container_io_reads",
            "Read operations on the device.",
            None,
            |d| d.reads,
        ),
        (
            "container_io_writes",
            "Write operations on the device.",
            None,
            |d| d.writes,
        ),
        (
            "container_io_discard",
            "Bytes discarded on the device.",
            Some(UnitKind::Bytes),
            |d| d.discard_bytes,
        ),
        (
            "container_io_discards",
            "Discard operations on the device.",
            None,
            |d| d.discards,
        ),
    ];
    for (name, help, unit, get) in fams {
        let def = Def {
            name,
            help,
            unit,
            counter: true,
        };
        family(
            encoder,
            &def,
            stats
                .iter()
                .zip(flats)
                .zip(&labels)
                .flat_map(|((s, f), ls)| {
                    f.io.iter().zip(ls).filter_map(move |(d, l)| {
                        get(d).map(|v| {
                            (
                                Labels {
                                    id: &s.id,
                                    namespace: &s.namespace,
                                    extra: l,
                                },
                                Val::U(v),
                            )
                        })
                    })
                }),
        )?;
    }
    Ok(())
}

type HugeField = fn(&Huge) -> Option<u64>;

fn encode_hugetlb(
    encoder: &mut DescriptorEncoder,
    stats: &[ContainerStats],
    flats: &[Flat],
) -> std::fmt::Result {
    let labels: Vec<Vec<[(&'static str, &str); 1]>> = flats
        .iter()
        .map(|f| {
            f.hugetlb
                .iter()
                .map(|h| [("page_size", h.page_size.as_str())])
                .collect()
        })
        .collect();
    let fams: [(&'static str, &'static str, bool, HugeField); 4] = [
        (
            "container_hugetlb_usage",
            "Huge pages in use.",
            false,
            |h| Some(h.usage),
        ),
        (
            "container_hugetlb_max_usage",
            "Peak huge page usage (cgroup v1).",
            false,
            |h| h.max_usage,
        ),
        (
            "container_hugetlb_limit",
            "Huge page limit (absent when unlimited).",
            false,
            |h| h.limit,
        ),
        (
            "container_hugetlb_max_events",
            "Huge page allocations that failed on the limit.",
            true,
            |h| h.max_events,
        ),
    ];
    for (name, help, counter, get) in fams {
        let def = Def {
            name,
            help,
            unit: (!counter).then_some(UnitKind::Bytes),
            counter,
        };
        family(
            encoder,
            &def,
            stats
                .iter()
                .zip(flats)
                .zip(&labels)
                .flat_map(|((s, f), ls)| {
                    f.hugetlb.iter().zip(ls).filter_map(move |(h, l)| {
                        get(h).map(|v| {
                            (
                                Labels {
                                    id: &s.id,
                                    namespace: &s.namespace,
                                    extra: l,
                                },
                                Val::U(v),
                            )
                        })
                    })
                }),
        )?;
    }
    Ok(())
}
