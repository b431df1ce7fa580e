//! `berth`: the command line over the berth crates.
//!
//! ```text
//! berth [--root DIR] image import PATH [--name REF] [--platform P | --all-platforms]
//! berth [--root DIR] image ls | rm REF… | tag SRC DST | export REF DEST [--format oci-dir|oci-archive]
//! berth [--root DIR] content ls | gc | verify
//! berth [--root DIR] image unpack REF [--snapshotter overlay|native]
//! berth [--root DIR] image pull REF [--plain-http] [--platform P] [--no-unpack] | push REF [TARGET]
//! berth login REGISTRY [-u USER] [--password-stdin]
//! berth [--root DIR] snapshot [--snapshotter S] ls | info KEY | rm KEY… | mounts KEY | usage [KEY] | diff KEY | gc
//! berth [--root DIR] layer apply FILE DIR
//! berth [--root DIR] mount REF TARGET [--snapshotter S] | umount TARGET
//! berth [--root DIR] run [--rm] [-d] [-t] [-i] [--name N] [-e K=V] [--mount SRC:DST[:ro]]
//!       [--memory 256m] [--cpus 0.5] [--pids-limit N] [--user U] [--workdir W]
//!       [--network host|none] [--runtime-root DIR] IMAGE [CMD…]
//! berth [--root DIR] ps | exec ID CMD… | kill ID [SIGNAL] | rm [-f] ID… | logs [-f] ID
//! berth [--root DIR] commit [-m MSG] [-a AUTHOR] [-c INSTRUCTION]… [--pause=false]
//!       [--compression gzip|zstd|none] CONTAINER REF
//! berth metrics [--runtime-root DIR] [--cgroup PATH] [--json|--prometheus] [ID…]
//! berth serve-metrics --listen 127.0.0.1:PORT [--runtime-root DIR]
//! berth --address SOCKET …   (the same commands through a berthd; see berth_cli/remote.rs)
//! ```
//!
//! The store root defaults to `/var/lib/berth` for root, else `$XDG_DATA_HOME/berth`
//! (`~/.local/share/berth`). Each command group lives in its own module under `berth_cli/`;
//! adding a group means adding a module, a variant of [`Group`] and a line in `main`.
//! Errors print one line (with their causes) and exit with status 1.

#[path = "berth_cli/container.rs"]
mod container;
#[path = "berth_cli/content.rs"]
mod content;
#[path = "berth_cli/engine.rs"]
mod engine;
#[path = "berth_cli/follow.rs"]
mod follow;
#[path = "berth_cli/foreground.rs"]
mod foreground;
#[path = "berth_cli/image.rs"]
mod image;
#[path = "berth_cli/layer.rs"]
mod layer;
#[path = "berth_cli/metrics.rs"]
mod metrics;
#[path = "berth_cli/mount.rs"]
mod mount;
#[path = "berth_cli/progress.rs"]
mod progress;
#[path = "berth_cli/registry.rs"]
mod registry;
#[path = "berth_cli/remote.rs"]
mod remote;
#[path = "berth_cli/remote_image.rs"]
mod remote_image;
#[path = "berth_cli/run.rs"]
mod run;
#[path = "berth_cli/snapshot.rs"]
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth::image::content::ContentStore;
use clap::{Parser, Subcommand};

/// berth: images, content, snapshots and containers.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    /// Store root (default: /var/lib/berth as root, else $XDG_DATA_HOME/berth).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Talk to the berthd serving this unix socket instead of working in-process.
    #[arg(long, global = true, value_name = "SOCKET")]
    address: Option<PathBuf>,
    #[command(subcommand)]
    group: Group,
}

#[derive(Debug, Subcommand)]
enum Group {
    /// Manage images.
    #[command(subcommand)]
    Image(ImageGroup),
    /// Inspect and maintain the content store.
    #[command(subcommand)]
    Content(content::ContentCommand),
    /// Manage snapshots (unpacked layers).
    Snapshot(snapshot::SnapshotArgs),
    /// Apply layer blobs onto plain directories.
    #[command(subcommand)]
    Layer(layer::LayerCommand),
    /// Mount a read-only view of an image (unpacking it first if needed).
    Mount {
        /// The image name.
        name: String,
        /// The mount point (created if missing).
        target: PathBuf,
        /// The snapshotter: overlay or native.
        #[arg(long, default_value = "overlay")]
        snapshotter: String,
    },
    /// Unmount and remove a view made by `berth mount`.
    Umount {
        /// The mount point.
        target: PathBuf,
    },
    /// Containers: run, ps, exec, kill, rm, logs, commit.
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Container metrics: metrics, serve-metrics.
    #[command(flatten)]
    Metrics(metrics::MetricsCommand),
    /// Store credentials for a registry in the docker-style auth file.
    Login(registry::LoginArgs),
    /// Remove a registry's credentials (from its credential helper and the auth file).
    Logout(registry::LogoutArgs),
}

/// `berth image …`: the image module's commands plus `unpack`.
#[derive(Debug, Subcommand)]
enum ImageGroup {
    #[command(flatten)]
    Base(image::ImageCommand),
    /// Unpack an image into a chain of committed snapshots.
    Unpack(snapshot::UnpackArgs),
    /// Pull an image from a registry (and unpack it).
    Pull(registry::PullArgs),
    /// Push an image to a registry.
    Push(registry::PushArgs),
}

/// The default store root. Stores live below it: `content/` (blobs, metadata), and the
/// other groups' own directories.
fn default_root() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/berth");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("berth")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(cli: &Cli) -> Result<()> {
    // The client's own credentials, with or without --address: they are what a pull or push
    // through a daemon sends (see berth_cli/remote_image.rs), as docker's login does.
    match &cli.group {
        Group::Login(args) => return registry::login(args),
        Group::Logout(args) => return registry::logout(args),
        _ => {}
    }
    if let Some(socket) = &cli.address {
        return remote::run(socket, &cli.group);
    }
    let root = cli.root.clone().unwrap_or_else(default_root);
    match &cli.group {
        Group::Layer(cmd) => return layer::run(cmd),
        Group::Umount { target } => return mount::umount(&root, target),
        Group::Container(cmd) => return container::run(&root, cmd),
        Group::Metrics(cmd) => return metrics::run(cmd),
        _ => {}
    }
    let content_root = root.join("content");
    let store = ContentStore::open(&content_root)
        .with_context(|| format!("opening the content store at {}", content_root.display()))?;
    match &cli.group {
        Group::Image(ImageGroup::Base(cmd)) => image::run(&store, &root, cmd),
        Group::Image(ImageGroup::Unpack(args)) => snapshot::unpack_command(&store, &root, args),
        Group::Image(ImageGroup::Pull(args)) => registry::pull(&store, &root, args),
        Group::Image(ImageGroup::Push(args)) => registry::push(&store, args),
        Group::Snapshot(args) => snapshot::run(&store, &root, args),
        Group::Mount {
            name,
            target,
            snapshotter,
        } => mount::mount(&store, &root, name, target, snapshotter),
        Group::Layer(cmd) => layer::run(cmd),
        Group::Umount { target } => mount::umount(&root, target),
        Group::Content(cmd) => content::run(&store, cmd),
        Group::Container(cmd) => container::run(&root, cmd),
        Group::Metrics(cmd) => metrics::run(cmd),
        Group::Login(args) => registry::login(args),
        Group::Logout(args) => registry::logout(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A container's non-zero exit status becomes ours.
            if let Some(foreground::ExitWith(code)) = e.downcast_ref() {
                return ExitCode::from(*code);
            }
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
