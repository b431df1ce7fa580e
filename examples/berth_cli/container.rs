//! Container commands: `run` (see [`crate::run`]), `ps`, `exec`, `kill`, `rm`, `logs [-f]`
//! and `commit`. Containers are found by id, unique id prefix or name in the records of
//! [`crate::engine::records`]; their live status comes from the runtime's state.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use berth::image::diff::DiffOptions;
use berth::image::metadata::{Descriptor, Image};
use berth::image::unpack::{self, LABEL_UNCOMPRESSED};
use berth::oci::{Compression, Digest, MAX_DOCUMENT_SIZE, Reference};
use berth::runtime::{ErrorKind as RtErrorKind, ExecOptions, Runtime, Stdio};
use berth::snapshot::LABEL_GC_ROOT;
use clap::Subcommand;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{Value, json};

use crate::engine::records::{self, ContainerRecord};
use crate::engine::{self, runspec};
use crate::follow;
use crate::foreground::{self, ConsoleSocket};
use crate::run::{self, RunArgs};

/// The container commands (flattened into `berth`'s top level).
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container from an image.
    Run(Box<RunArgs>),
    /// List containers.
    Ps {
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a command in a running container.
    Exec {
        /// Allocate a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Environment variable K=V; repeatable.
        #[arg(short, long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// User (name or uid, optionally :group), resolved in the container.
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory.
        #[arg(short, long)]
        workdir: Option<String>,
        /// The container.
        container: String,
        /// The command.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Send a signal to a container's init (default KILL).
    Kill {
        /// The container.
        container: String,
        /// Signal name or number.
        signal: Option<String>,
    },
    /// Remove containers (their state, cgroup, mount and snapshot).
    Rm {
        /// Kill them first if they run.
        #[arg(short, long)]
        force: bool,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print the output of a detached container.
    Logs {
        /// Keep printing new output until the container exits (or Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// The container.
        container: String,
    },
    /// Make an image from a container's changes.
    Commit {
        /// The container.
        container: String,
        /// The new image's reference.
        reference: String,
        /// Layer compression: gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
    },
}

/// Runs a container command.
pub fn run(root: &Path, cmd: &ContainerCommand) -> Result<()> {
    match cmd {
        ContainerCommand::Run(args) => run::run(root, args),
        ContainerCommand::Ps { quiet } => ps(root, *quiet),
        ContainerCommand::Exec {
            tty,
            interactive,
            env,
            user,
            workdir,
            container,
            command,
        } => {
            let record = records::find(root, container)?;
            exec(
                root,
                &record,
                command,
                env,
                user.as_deref(),
                workdir.as_deref(),
                *tty,
                *interactive,
            )
        }
        ContainerCommand::Kill { container, signal } => {
            let record = records::find(root, container)?;
            let sig = parse_signal(signal.as_deref().unwrap_or("KILL"))?;
            Runtime::new(&record.runtime_root)?
                .kill(&record.id, sig, false)
                .with_context(|| format!("signalling container {}", record.id))
        }
        ContainerCommand::Rm { force, containers } => {
            let mut failed = 0;
            for c in containers {
                let result = records::find(root, c).and_then(|r| engine::remove(root, &r, *force));
                match result {
                    Ok(()) => println!("{c}"),
                    Err(e) => {
                        eprintln!("berth: rm {c}: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} container(s) not removed");
            }
            Ok(())
        }
        ContainerCommand::Logs { follow, container } => {
            let record = records::find(root, container)?;
            logs(root, &record, *follow)
        }
        ContainerCommand::Commit {
            container,
            reference,
            compression,
        } => {
            let record = records::find(root, container)?;
            let compression = match compression.as_str() {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "none" => Compression::None,
                other => bail!("unknown compression {other:?} (gzip, zstd or none)"),
            };
            let image = commit(root, &record, reference, compression)?;
            println!("{} {}", image.name, image.target.digest);
            Ok(())
        }
    }
}

/// `berth logs [-f]`: the log of a detached container; with `follow_output`, then what it writes
/// until its init exits (see [`crate::follow`]) or we get SIGINT, SIGTERM or SIGHUP, which end
/// the follow cleanly (status 0).
///
/// The end is the init's exit, which is exact for the containers this CLI starts (their
/// processes write the log themselves). A container a berthd started attached on the same
/// root has its output appended by the daemon, which may still be copying when the init has
/// exited: follow those through the daemon (`--address`), which waits for its copy.
fn logs(root: &Path, record: &ContainerRecord, follow_output: bool) -> Result<()> {
    let path = records::log_path(root, &record.id);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !record.detached => {
            bail!("container {} was not detached: it has no log", record.id)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    if !follow_output {
        std::io::copy(&mut file, &mut out)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(());
    }
    // The stop signals arrive on a signalfd polled with the log (this process has no other
    // threads, so blocking them here blocks them everywhere).
    let mut stop = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(sig);
    }
    stop.thread_block().context("blocking the stop signals")?;
    let signals = SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let init = follow::watch_init(&record.runtime_root, &record.id);
    let mut ends = vec![signals.as_fd()];
    if let follow::InitWatch::Pidfd(fd) = &init {
        ends.push(fd.as_fd());
    }
    let mut stopped = || follow::init_stopped(&record.runtime_root, &record.id);
    let ended: Option<&mut dyn FnMut() -> bool> = match &init {
        follow::InitWatch::Poll => Some(&mut stopped),
        _ => None,
    };
    let result = if matches!(init, follow::InitWatch::Stopped) {
        // Nothing more will come: print what is there.
        std::io::copy(&mut file, &mut out).map(|_| ())
    } else {
        follow::follow(&mut file, &ends, ended, &mut |chunk| {
            out.write_all(chunk)?;
            out.flush()
        })
    };
    match result {
        // A reader that went away (`| head`) ends the follow, as it ends `tail -f`.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("following {}", path.display())),
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if n < 1 || n > libc::SIGRTMAX() {
            bail!("invalid signal number {n}");
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Signal::from_str(&format!("SIG{name}"))
        .map(|s| s as i32)
        .with_context(|| format!("unknown signal {text:?}"))
}

/// The live status of a container from the runtime's state.
fn status(record: &ContainerRecord) -> String {
    match berth::runtime::read_state(&record.runtime_root, &record.id) {
        Ok(st) => st.status.as_str().to_owned(),
        Err(e) if e.kind() == RtErrorKind::NotFound => "no runtime state".to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn ago(secs: u64) -> String {
    let d = records::now_secs().saturating_sub(secs);
    match d {
        0..60 => format!("{d} seconds ago"),
        60..3600 => format!("{} minutes ago", d / 60),
        3600..86400 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

fn ps(root: &Path, quiet: bool) -> Result<()> {
    let all = records::list(root)?;
    if quiet {
        for r in &all {
            println!("{}", r.id);
        }
        return Ok(());
    }
    println!(
        "{:<12}  {:<40}  {:<24}  {:<16}  {:<16}  NAME",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for r in &all {
        let mut command = r.command.join(" ");
        if command.chars().count() > 22 {
            command = format!("{}…", command.chars().take(21).collect::<String>());
        }
        println!(
            "{:<12}  {:<40}  {:<24}  {:<16}  {:<16}  {}",
            &r.id[..r.id.len().min(12)],
            r.image,
            format!("{command:?}"),
            ago(r.created),
            status(r),
            r.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn exec(
    root: &Path,
    record: &ContainerRecord,
    command: &[String],
    env: &[String],
    user: Option<&str>,
    workdir: Option<&str>,
    tty: bool,
    interactive: bool,
) -> Result<()> {
    let rt = Runtime::new(&record.runtime_root)?;
    let spec = rt.spec(&record.id)?;
    let base = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let user = user
        .map(|u| runspec::resolve_user(&records::container_dir(root, &record.id).join("rootfs"), u))
        .transpose()?;
    let process = runspec::exec_process(&base, command, env, tty, user.as_ref(), workdir)?;
    let mut opts = ExecOptions::default();
    if !interactive {
        opts.stdin = Stdio::Null;
    }
    let console = if tty {
        let socket = ConsoleSocket::new(&format!("x{}", record.id))?;
        opts.console_socket = Some(socket.path().to_path_buf());
        Some(socket)
    } else {
        None
    };
    let proc = rt
        .exec(&record.id, &process, opts)
        .with_context(|| format!("exec in container {}", record.id))?;
    let master = console.as_ref().map(ConsoleSocket::receive).transpose()?;
    let status = foreground::wait(&proc, master, interactive)?;
    foreground::exit_result(status)
}

/// RFC 3339 UTC time of `secs` since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn put_document(store: &berth::image::content::ContentStore, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::sha256(bytes);
    store.ingest(
        &format!("commit-{digest}"),
        bytes,
        &digest,
        Some(bytes.len() as u64),
        &BTreeMap::new(),
        &mut |_, _| {},
    )?;
    Ok(digest)
}

/// `berth commit`: the container's changes become a layer on top of its image's layers; the
/// config gains the diffID and a history entry; a new manifest is recorded as `reference`.
pub fn commit(
    root: &Path,
    record: &ContainerRecord,
    reference: &str,
    compression: Compression,
) -> Result<Image> {
    let name = Reference::parse(reference)
        .with_context(|| format!("image reference {reference:?}"))?
        .to_string();
    let store = engine::open_store(root)?;
    let sn = engine::open_snapshotter(root, &record.snapshotter)?;
    let base = store
        .images()
        .get(&record.image)
        .with_context(|| format!("the container's image {}", record.image))?;
    let resolved = unpack::resolve(&store, &base.target, None)?;
    let now = records::now_secs();
    // Protect the new blob from a concurrent content GC until the image references it.
    let labels = BTreeMap::from([(LABEL_GC_ROOT.to_owned(), now.to_string())]);
    let opts = DiffOptions {
        compression,
        ..DiffOptions::default()
    };
    let layer = unpack::diff_snapshot(&store, sn.as_ref(), record.snapshot_key(), &opts, &labels)
        .with_context(|| format!("diff of container {}", record.id))?;
    let info = store.info(&layer.digest)?;
    let diff_id = info
        .labels
        .get(LABEL_UNCOMPRESSED)
        .cloned()
        .context("the new layer has no diffID label")?;

    let mut config: Value =
        serde_json::from_slice(&store.read_all(&resolved.config, MAX_DOCUMENT_SIZE)?)?;
    let created = rfc3339(now);
    config["created"] = json!(created);
    match config["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id)),
        None => bail!("the image config has no rootfs.diff_ids"),
    }
    let entry = json!({
        "created": created,
        "created_by": format!("berth commit {} ({})", record.id, record.command.join(" ")),
    });
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = put_document(&store, &config_bytes)?;

    let mut manifest: Value =
        serde_json::from_slice(&store.read_all(&resolved.manifest, MAX_DOCUMENT_SIZE)?)?;
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    match manifest["layers"].as_array_mut() {
        Some(l) => l.push(json!({
            "mediaType": layer.media_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        })),
        None => bail!("the image manifest has no layers"),
    }
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(berth::oci::media_type::OCI_MANIFEST)
        .to_owned();
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = put_document(&store, &manifest_bytes)?;
    let mut target = Descriptor::new(media_type, manifest_digest, manifest_bytes.len() as u64);
    target.platform = base.target.platform.clone();
    let image = store.images().put(Image::new(name, target))?;
    // The image references the layer now: drop the temporary GC root.
    let mut unlabelled = info.clone();
    unlabelled.labels.remove(LABEL_GC_ROOT);
    store.update(&unlabelled, &[&format!("labels.{LABEL_GC_ROOT}")])?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err() && parse_signal("0").is_err());
    }
}
