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
//! Cost: a scrape reads about 20 small files per v1 container (fewer on v2), only those the
//! exposition uses ([`ReadOptions::exposition`]). Scrapes of [`PARALLEL_MIN`] or more
//! containers are split over up to `min(available_parallelism, 4)` threads
//! ([`CgroupCollector::with_threads`]); [`CgroupCollector::with_open_files`] keeps the files
//! open between scrapes (see [`crate::fdcache`]).
//!
//! Concurrency: the collector is `Send + Sync`; concurrent scrapes each read the cgroups
//! independently (they share the open-file cache, which is thread-safe). The source is called
//! once per scrape, from the scraping thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::detect::CgroupPaths;
use crate::exposition::{ContainerStats, DeviceNames, encode_stats};
use crate::fdcache::{OpenFiles, with_open_files};
use crate::{ReadOptions, read_metrics_with};

/// Scrapes with fewer containers than this are read on the calling thread.
pub const PARALLEL_MIN: usize = 16;

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
    threads: usize,
    open_files: Option<Arc<OpenFiles>>,
}

impl fmt::Debug for CgroupCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupCollector")
            .field("devices", &self.devices)
            .field("read_errors", &self.read_errors.load(Ordering::Relaxed))
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl CgroupCollector {
    /// A collector over `source`, resolving device names under `/sys`, reading with up to
    /// `min(available_parallelism, 4)` threads.
    pub fn new(source: impl ContainerSource) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        CgroupCollector {
            source: Box::new(source),
            devices: DeviceNames::default(),
            read_errors: AtomicU64::new(0),
            threads,
            open_files: None,
        }
    }

    /// Keeps up to `budget` cgroup files open between scrapes and re-reads them with
    /// `pread(2)` (see [`crate::fdcache`]): several times cheaper per file, at the cost of
    /// holding fds (and a kernel `seq_file` buffer each). Files not read by a scrape are closed
    /// at its end. [`OpenFiles::default_budget`] is a reasonable budget.
    pub fn with_open_files(mut self, budget: usize) -> Self {
        self.open_files = (budget > 0).then(|| Arc::new(OpenFiles::new(budget)));
        self
    }

    /// The open-file cache, when enabled.
    pub fn open_files(&self) -> Option<&OpenFiles> {
        self.open_files.as_deref()
    }

    /// Reads the containers of one scrape with up to `threads` threads (at least 1). A scrape
    /// of fewer than [`PARALLEL_MIN`] containers always runs on the calling thread.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Resolves block-device names under `sys_root` instead of `/sys` (for fixture trees).
    pub fn with_sys_root(mut self, sys_root: impl Into<std::path::PathBuf>) -> Self {
        self.devices = DeviceNames::new(sys_root);
        self
    }

    /// Reads the statistics of every current container (what a scrape exports), in the
    /// source's order. Containers whose read fails are skipped, logged and counted.
    pub fn scrape(&self) -> Vec<ContainerStats> {
        if let Some(cache) = &self.open_files {
            cache.begin_scrape();
        }
        let out = self.scrape_all();
        if let Some(cache) = &self.open_files {
            cache.end_scrape();
        }
        out
    }

    fn scrape_all(&self) -> Vec<ContainerStats> {
        let containers = self.source.containers();
        let threads = if containers.len() < PARALLEL_MIN {
            1
        } else {
            self.threads.min(containers.len())
        };
        if threads <= 1 {
            return containers
                .into_iter()
                .filter_map(|c| self.read_one(c))
                .collect();
        }
        let chunk = containers.len().div_ceil(threads);
        let mut parts: Vec<Vec<Container>> = Vec::with_capacity(threads);
        let mut rest = containers;
        while rest.len() > chunk {
            let tail = rest.split_off(chunk);
            parts.push(rest);
            rest = tail;
        }
        parts.push(rest);
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(parts.len());
            let mut parts = parts.into_iter();
            // The calling thread reads the first part itself.
            let first = parts.next().unwrap_or_default();
            for part in parts {
                handles.push(scope.spawn(move || {
                    part.into_iter()
                        .filter_map(|c| self.read_one(c))
                        .collect::<Vec<_>>()
                }));
            }
            let mut out: Vec<ContainerStats> =
                first.into_iter().filter_map(|c| self.read_one(c)).collect();
            for h in handles {
                match h.join() {
                    Ok(part) => out.extend(part),
                    Err(_) => {
                        self.read_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("a cgroup reader thread panicked");
                    }
                }
            }
            out
        })
    }

    fn read_one(&self, c: Container) -> Option<ContainerStats> {
        let read = with_open_files(self.open_files.as_ref(), || {
            read_metrics_with(&c.cgroup, &ReadOptions::exposition())
        });
        match read {
            Ok(metrics) => Some(ContainerStats {
                id: c.id,
                namespace: c.namespace,
                metrics,
            }),
            Err(err) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container_id = %c.id, %err, "reading cgroup statistics failed");
                None
            }
        }
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
