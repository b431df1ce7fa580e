//! `berth image unpack` and `berth snapshot …`: unpack images into snapshots, list, inspect,
//! remove, mount-describe, measure, diff and collect snapshots.
//!
//! Snapshotters live under the berth root: `<root>/snapshots/<name>` with `name` `overlay`
//! or `native`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::diff::DiffOptions;
use berth::image::unpack::{self, UnpackOptions};
use berth::oci::{Compression, Platform, Reference};
use berth::snapshot::{
    Info, LABEL_GC_ROOT, NativeSnapshotter, OverlaySnapshotter, Snapshotter, Usage,
};
use clap::{Args, Subcommand};

use crate::progress::Bars;

/// The snapshotters berth knows.
pub const SNAPSHOTTERS: [&str; 2] = ["overlay", "native"];

/// `<root>/snapshots/<name>`.
pub fn snapshotter_root(root: &Path, name: &str) -> PathBuf {
    root.join("snapshots").join(name)
}

/// Opens the snapshotter `name` (`overlay` or `native`) under the berth root.
pub fn open_snapshotter(root: &Path, name: &str) -> Result<Box<dyn Snapshotter>> {
    let dir = snapshotter_root(root, name);
    Ok(match name {
        "overlay" => Box::new(
            OverlaySnapshotter::new(&dir)
                .with_context(|| format!("opening the overlay snapshotter at {}", dir.display()))?,
        ),
        "native" => Box::new(
            NativeSnapshotter::new(&dir)
                .with_context(|| format!("opening the native snapshotter at {}", dir.display()))?,
        ),
        other => bail!("unknown snapshotter {other:?} (overlay or native)"),
    })
}

/// Arguments of `berth image unpack`.
#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The image name.
    pub name: String,
    /// The snapshotter: overlay or native.
    #[arg(long, default_value = "overlay")]
    pub snapshotter: String,
    /// Platform to unpack from a multi-platform image (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Most layers extracted at once (default: the number of CPUs).
    #[arg(long, default_value_t = 0)]
    pub max_parallel: usize,
    /// Apply layers one by one on their parents even when the snapshotter can rebase.
    #[arg(long)]
    pub sequential: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `berth image unpack`.
pub fn unpack_command(store: &ContentStore, root: &Path, args: &UnpackArgs) -> Result<()> {
    let sn = open_snapshotter(root, &args.snapshotter)?;
    let name = Reference::parse(&args.name)?.to_string();
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let bars = Bars::new(args.quiet);
    let mut opts = UnpackOptions::new(&args.snapshotter);
    opts.platform = platform.as_ref();
    opts.progress = &bars;
    opts.max_parallel = args.max_parallel;
    opts.sequential = args.sequential;
    let started = Instant::now();
    let report = unpack::unpack_image(store, sn.as_ref(), &name, &opts)
        .with_context(|| format!("unpacking {name}"))?;
    match &report.chain_id {
        Some(chain) => println!("unpacked {name} {chain}"),
        None => println!("unpacked {name} (no layers)"),
    }
    if !args.quiet {
        eprintln!(
            "{} layers applied, {} already present, in {:.2?}",
            report.applied(),
            report.skipped(),
            started.elapsed()
        );
    }
    Ok(())
}

/// Snapshot commands.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The snapshotter: overlay or native.
    #[arg(long, global = true, default_value = "overlay")]
    pub snapshotter: String,
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// `berth snapshot …` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    #[command(alias = "list")]
    Ls,
    /// Show one snapshot as JSON.
    Info {
        /// Key or name.
        key: String,
    },
    /// Remove snapshots (children first).
    Rm {
        /// Keys or names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mounts of an active snapshot or a view as JSON.
    Mounts {
        /// Key.
        key: String,
    },
    /// Disk usage of one snapshot (its own layer), or of all.
    Usage {
        /// Key or name; all when absent.
        key: Option<String>,
    },
    /// Write the changes of a snapshot against its parent as a layer blob into the content
    /// store and print its descriptor.
    Diff {
        /// Key or name.
        key: String,
        /// gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
    },
    /// Remove unpacked snapshots that no image uses.
    Gc,
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn all_snapshots(sn: &dyn Snapshotter) -> Result<Vec<Info>> {
    let mut out = Vec::new();
    sn.walk(&[], &mut |i| {
        out.push(i.clone());
        Ok(())
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn parse_compression(s: &str) -> Result<Compression> {
    Ok(match s {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" | "plain" => Compression::None,
        other => bail!("unknown compression {other:?} (gzip, zstd or none)"),
    })
}

fn info_json(info: &Info) -> serde_json::Value {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    serde_json::json!({
        "name": info.name,
        "kind": info.kind.as_str(),
        "parent": info.parent,
        "labels": info.labels,
        "created": secs(info.created),
        "updated": secs(info.updated),
    })
}

/// Runs a snapshot command.
pub fn run(store: &ContentStore, root: &Path, args: &SnapshotArgs) -> Result<()> {
    let sn = open_snapshotter(root, &args.snapshotter)?;
    let sn = sn.as_ref();
    match &args.command {
        SnapshotCommand::Ls => {
            println!("{:<75}  {:<75}  KIND", "KEY", "PARENT");
            for i in all_snapshots(sn)? {
                println!("{:<75}  {:<75}  {}", i.name, i.parent, i.kind);
            }
        }
        SnapshotCommand::Info { key } => {
            let info = sn.stat(key).with_context(|| format!("snapshot {key}"))?;
            println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
        }
        SnapshotCommand::Rm { keys } => {
            for key in keys {
                sn.remove(key).with_context(|| format!("removing {key}"))?;
                println!("removed {key}");
            }
        }
        SnapshotCommand::Mounts { key } => {
            let mounts = sn.mounts(key).with_context(|| format!("snapshot {key}"))?;
            println!("{}", serde_json::to_string_pretty(&mounts)?);
        }
        SnapshotCommand::Usage { key } => {
            let keys: Vec<String> = match key {
                Some(k) => vec![k.clone()],
                None => all_snapshots(sn)?.into_iter().map(|i| i.name).collect(),
            };
            println!("{:<75}  {:>10}  INODES", "KEY", "SIZE");
            let mut total = Usage::default();
            for k in keys {
                let u = sn.usage(&k).with_context(|| format!("usage of {k}"))?;
                total.add(u);
                println!("{k:<75}  {:>10}  {}", human(u.size), u.inodes);
            }
            if key.is_none() {
                println!(
                    "{:<75}  {:>10}  {}",
                    "total",
                    human(total.size),
                    total.inodes
                );
            }
        }
        SnapshotCommand::Diff { key, compression } => {
            let opts = DiffOptions {
                compression: parse_compression(compression)?,
                ..DiffOptions::default()
            };
            // The new blob belongs to no image yet: keep it from the content GC.
            let mut labels = BTreeMap::new();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            labels.insert(LABEL_GC_ROOT.to_owned(), now.to_string());
            let desc = unpack::diff_snapshot(store, sn, key, &opts, &labels)
                .with_context(|| format!("diff of {key}"))?;
            println!("{}", serde_json::to_string_pretty(&desc)?);
        }
        SnapshotCommand::Gc => {
            let report = unpack::gc_snapshots(store, sn)?;
            for r in &report.removed {
                println!("removed {r}");
            }
            println!(
                "gc: removed {} snapshots, kept {}",
                report.removed.len(),
                report.kept
            );
        }
    }
    Ok(())
}
