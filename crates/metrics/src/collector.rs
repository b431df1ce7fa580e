//! A `prometheus-client` collector that reads containers' cgroups at scrape time.
//!
//! A front end registers one [`CgroupCollector`] with its `Registry`. On every scrape the
//! collector asks its [`ContainerSource`] for the current containers (id, namespace, cgroup
//! location), reads each one's statistics, and encodes them with the crate's schema
//! ([`crate::exposition`]). A container whose read fails (malformed file, permission error) is
//! logged with `tracing::warn!`, counted in `berth_metrics_read_errors_total`, and left out of
//! that scrape; the others are still exported. A container whose cgroup is gone simply has no
//! samples.
//!
//! Concurrency: the collector is `Send + Sync`; concurrent scrapes each read the cgroups
//! independently. The source is called once per scrape, from the scraping thread.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::detect::CgroupPaths;
use crate::exposition::{ContainerStats, DeviceNames, encode_stats};
use crate::read_metrics;

/// A container to export: labels and cgroup location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The `container_id` label.
    pub id: String,
    /// The `namespace` label (containerd namespace; use `"default"` when there is none).
    pub namespace: String,
    /// Where its cgroup lives.
    pub cgroup: CgroupPaths,
}

/// Provides the containers to export, asked once per scrape.
pub trait ContainerSource: Send + Sync + 'static {
    /// The current containers.
    fn containers(&self) -> Vec<Container>;
}

impl<F> ContainerSource for F
where
    F: Fn() -> Vec<Container> + Send + Sync + 'static,
{
    fn containers(&self) -> Vec<Container> {
        self()
    }
}

/// A fixed list of containers is a source too.
impl ContainerSource for Vec<Container> {
    fn containers(&self) -> Vec<Container> {
        self.clone()
    }
}

/// The collector. See the module docs.
pub struct CgroupCollector {
    source: Box<dyn ContainerSource>,
    devices: DeviceNames,
    read_errors: AtomicU64,
}

impl fmt::Debug for CgroupCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupCollector")
            .field("devices", &self.devices)
            .field("read_errors", &self.read_errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CgroupCollector {
    /// A collector over `source`, resolving device names under `/sys`.
    pub fn new(source: impl ContainerSource) -> Self {
        CgroupCollector {
            source: Box::new(source),
            devices: DeviceNames::default(),
            read_errors: AtomicU64::new(0),
        }
    }

    /// Resolves block-device names under `sys_root` instead of `/sys` (for fixture trees).
    pub fn with_sys_root(mut self, sys_root: impl Into<std::path::PathBuf>) -> Self {
        self.devices = DeviceNames::new(sys_root);
        self
    }

    /// Reads the statistics of every current container (what a scrape exports). Containers
    /// whose read fails are skipped, logged and counted.
    pub fn scrape(&self) -> Vec<ContainerStats> {
        let containers = self.source.containers();
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            match read_metrics(&c.cgroup) {
                Ok(metrics) => out.push(ContainerStats {
                    id: c.id,
                    namespace: c.namespace,
                    metrics,
                }),
                Err(err) => {
                    self.read_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(container_id = %c.id, %err, "reading cgroup statistics failed");
                }
            }
        }
        out
    }

    /// Number of container reads that failed since the collector was made.
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }
}

impl Collector for CgroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.scrape();
        encode_stats(&mut encoder, &stats, &self.devices)?;
        let errors = ConstCounter::new(self.read_errors());
        let metric = encoder.encode_descriptor(
            "berth_metrics_read_errors",
            "Container cgroup reads that failed (the container was left out of that scrape).",
            None,
            errors.metric_type(),
        )?;
        errors.encode(metric)
    }
}
