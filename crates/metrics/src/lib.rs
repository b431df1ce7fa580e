//! berth-metrics: container statistics from cgroup v1, v2 and hybrid hosts, exposed to
//! Prometheus, plus OOM notifications.
//!
//! # Layers
//! - [`detect`]: which layout the host uses ([`CgroupMode`]) and where one cgroup lives
//!   ([`CgroupPaths`]: by path relative to the hierarchy roots, by pid, or given directly).
//!   Every reader takes a configurable cgroupfs root so fixture trees can be read.
//! - [`v1`], [`v2`], [`psi`]: readers of the kernel's files into the typed, serde-able
//!   statistics of [`types`], shaped like containerd's `cgroup1`/`cgroup2` metrics protos.
//!   A missing file gives `None` for its figure; malformed content is a
//!   [`MetricsError::Parse`] naming the file (see [`error`] for the policy).
//! - [`exposition`]: one Prometheus schema for v1 and v2 (unit-correct names, counters as
//!   counters), encoded with `prometheus-client` in text 0.0.4 or OpenMetrics.
//! - [`collector`]: a `prometheus_client` [`Collector`](prometheus_client::collector::Collector)
//!   that reads a changing set of containers at scrape time (only the files the exposition
//!   uses, [`ReadOptions::exposition`]; in parallel; optionally through [`fdcache`], which keeps
//!   the files open between scrapes).
//! - [`oom`]: OOM notifications (v1 eventfd on `memory.oom_control`, v2 inotify on
//!   `memory.events`) from a background thread that stops on drop.
//!
//! The crate takes cgroup locations; it does not read the runtime's state directory itself.
//! A front end resolves a container id to its cgroups path (from the runtime's `state.json`)
//! and calls [`Hierarchy::paths_for`].
//!
//! # Concurrency
//! Readers are plain blocking functions without shared state; they may run on any thread.
//! A cgroup removed while it is read yields `None` figures, not an error.
//!
//! # Example
//! ```no_run
//! use berth_metrics::{Hierarchy, read_metrics};
//! let h = Hierarchy::detect()?;
//! let paths = h.paths_for("/berth/ctr1")?;
//! let stats = read_metrics(&paths)?;
//! println!("{}", serde_json::to_string_pretty(&stats).unwrap_or_default());
//! # Ok::<(), berth_metrics::MetricsError>(())
//! ```

pub mod collector;
pub mod detect;
pub mod error;
pub mod exposition;
pub mod fdcache;
mod files;
pub mod oom;
pub mod psi;
mod schema;
pub mod types;
pub mod v1;
pub mod v2;

pub use collector::{CgroupCollector, Container, ContainerSource};
pub use detect::{CgroupMode, CgroupPaths, DEFAULT_CGROUP_ROOT, DEFAULT_PROC_ROOT, Hierarchy};
pub use error::{ErrorKind, MetricsError, Result};
pub use exposition::{ContainerStats, Format, render};
pub use files::{UNLIMITED, page_size_bytes};
pub use oom::{OomEvent, OomWatcher};
pub use types::*;

/// The `prometheus-client` crate, re-exported so front ends register a [`CgroupCollector`] in a
/// `Registry` of the same version this crate implements `Collector` for.
pub use prometheus_client;

/// What to read besides the figures the Prometheus exposition uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip the files whose figures the exposition does not export (v1 `memsw`/`kmem`/
    /// `kmem.tcp` limits, peaks and fail counts; v1 blkio queue/wait/service-time/merged/
    /// sectors lists). Those fields are then `None`/empty. Fewer files make a scrape cheaper.
    pub exposition_only: bool,
}

impl ReadOptions {
    /// Everything (the default).
    pub fn full() -> Self {
        ReadOptions::default()
    }

    /// Only what the exposition needs (what [`CgroupCollector`] reads).
    pub fn exposition() -> Self {
        ReadOptions {
            exposition_only: true,
        }
    }
}

/// Reads the statistics of the cgroup at `paths`: v1 when it has any v1 controller directory
/// (with PSI and possibly hugetlb from its unified directory on hybrid hosts), v2 otherwise.
///
/// Errors: [`MetricsError::InvalidPath`] when `paths` is empty; [`MetricsError::Parse`] or
/// [`MetricsError::Io`] for a file that exists but cannot be read or understood. Missing files
/// (and a missing cgroup) give `None` figures.
pub fn read_metrics(paths: &CgroupPaths) -> Result<Metrics> {
    read_metrics_with(paths, &ReadOptions::full())
}

/// [`read_metrics`] with [`ReadOptions`].
pub fn read_metrics_with(paths: &CgroupPaths, opts: &ReadOptions) -> Result<Metrics> {
    if paths.is_v1() {
        return v1::read_v1(paths, opts).map(Metrics::V1);
    }
    match paths.unified() {
        Some(dir) => v2::read_v2(dir).map(Metrics::V2),
        None => Err(MetricsError::InvalidPath {
            path: Default::default(),
            reason: "no cgroup directory given",
        }),
    }
}

/// Reads the statistics of the cgroups process `pid` belongs to, located through
/// `/proc/<pid>/cgroup` (`proc_root` overrides `/proc`).
///
/// Errors: as [`Hierarchy::paths_for_pid`] and [`read_metrics`].
pub fn read_metrics_for_pid(
    hierarchy: &Hierarchy,
    proc_root: Option<&std::path::Path>,
    pid: u32,
) -> Result<Metrics> {
    let paths = hierarchy.paths_for_pid(proc_root, pid)?;
    read_metrics(&paths)
}
