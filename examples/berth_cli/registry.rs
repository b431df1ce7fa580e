//! `berth image pull`, `berth image push` and `berth login`: the registry client
//! (`berth::image::registry`) with a progress bar per layer.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::registry::{
    self, Credentials, PushOptions, PushReport, RegistryOptions, RetryPolicy,
};
use clap::Args;

use crate::engine::transfer::{self, PullRequest, PullSummary};
use crate::progress::Bars;

/// How to reach a registry (shared by pull, push and login).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry of the reference (never TLS).
    #[arg(long)]
    pub plain_http: bool,
    /// A registry (host[:port]) reached with plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// The docker-style auth file (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the registry, besides the system ones; repeatable.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// A docker-style certificates directory: DIR/HOST[:PORT]/*.crt are trusted CAs for that
    /// registry, NAME.cert with NAME.key a client certificate (default: /etc/docker/certs.d
    /// when it exists).
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// A containerd-style hosts directory: DIR/HOST[:PORT]/hosts.toml names mirrors (tried
    /// in order before the upstream, for each request), the upstream `server`, and per-host
    /// `ca`, `client`, `skip_verify`, `override_path`, `header`, `dial_timeout` (e.g.
    /// /etc/containerd/certs.d).
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
    /// Attempts per request or blob on transient failures (refused or cut connections,
    /// 429/5xx); 1 disables retries.
    #[arg(long, value_name = "N", default_value_t = RetryPolicy::default().max_attempts)]
    pub retries: u32,
    /// The wait before the first retry in milliseconds (doubling, with jitter).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub retry_delay_ms: u64,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            plain_http: self.plain_http,
            insecure_hosts: self.insecure.clone(),
            auth_file: self.auth_file.clone(),
            ca_files: self.ca_files.clone(),
            certs_dir: self.certs_dir.clone().or_else(transfer::default_certs_dir),
            hosts_dir: self.hosts_dir.clone(),
            retry: RetryPolicy {
                max_attempts: self.retries,
                base_delay: Duration::from_millis(self.retry_delay_ms),
                ..RetryPolicy::default()
            },
            ..RegistryOptions::default()
        }
    }
}

/// Arguments of `berth image pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image reference (`busybox`, `host:5000/repo:tag`, `repo@sha256:…`).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Pull this platform (os/arch[/variant]) instead of the host's.
    #[arg(long, conflicts_with = "all_platforms")]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image (implies --no-unpack).
    #[arg(long)]
    pub all_platforms: bool,
    /// Only store the image; do not unpack it into snapshots.
    #[arg(long)]
    pub no_unpack: bool,
    /// The snapshotter to unpack into: overlay or native.
    #[arg(long, default_value = "overlay")]
    pub snapshotter: String,
    /// Most layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    pub max_concurrent: usize,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `berth image push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local image name.
    pub reference: String,
    /// Where to push it (default: the same reference).
    pub target: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A repository of the same registry to mount blobs from when it has them.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
    /// Blobs larger than this many MiB are uploaded in chunks of this size.
    #[arg(long, default_value_t = 16)]
    pub chunk_mib: u64,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `berth login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (host[:port]).
    pub registry: String,
    /// The user name.
    #[arg(long, short)]
    pub username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub options: RegistryArgs,
}

/// Arguments of `berth logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (host[:port]).
    pub registry: String,
    /// The docker-style auth file (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
}

/// Runs `berth image pull`.
pub fn pull(store: &ContentStore, root: &Path, args: &PullArgs) -> Result<()> {
    let bars = Bars::new(args.quiet);
    let req = PullRequest {
        reference: &args.reference,
        registry: args.registry.options(),
        platform: transfer::platform_choice(args.platform.as_deref(), args.all_platforms)?,
        unpack: !args.no_unpack,
        snapshotter: &args.snapshotter,
        max_concurrent: args.max_concurrent,
    };
    let started = Instant::now();
    let summary = transfer::pull(root, store, &req, &bars, &bars)?;
    print_pull(&summary, args.quiet, started);
    Ok(())
}

/// Prints what a pull did: the name and digest on stdout; unless `quiet`, the blob and unpack
/// counts on stderr (the same for a pull in-process and one through berthd).
pub fn print_pull(summary: &PullSummary, quiet: bool, started: Instant) {
    println!("{} {}", summary.name, summary.digest);
    if quiet {
        return;
    }
    eprintln!(
        "{} blobs ({} already stored), {} bytes downloaded{}, in {:.2?}",
        summary.blobs,
        summary.present,
        summary.downloaded,
        if summary.resumed == 0 {
            String::new()
        } else {
            format!(", {} resumed", summary.resumed)
        },
        started.elapsed()
    );
    if let Some(u) = &summary.unpacked {
        eprintln!(
            "unpacked: {} layers applied while downloading, {} after, {} already present{}",
            u.streamed,
            u.applied,
            u.present,
            if u.chain_id.is_empty() {
                String::new()
            } else {
                format!(", top chain {}", u.chain_id)
            }
        );
    }
}

/// Runs `berth image push`.
pub fn push(store: &ContentStore, args: &PushArgs) -> Result<()> {
    let bars = Bars::new(args.quiet);
    let opts = PushOptions {
        registry: args.registry.options(),
        chunk_size: args.chunk_mib.max(1) << 20,
        mount_from: args.mount_from.clone(),
        progress: &bars,
    };
    let report = transfer::push(store, &args.reference, args.target.as_deref(), &opts)?;
    print_push(&report, args.quiet);
    Ok(())
}

/// Prints what a push did: the reference and digest on stdout; unless `quiet`, the blob counts
/// on stderr (the same for a push in-process and one through berthd).
pub fn print_push(report: &PushReport, quiet: bool) {
    println!(
        "{} {}",
        report.reference,
        report
            .digest
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    if quiet {
        return;
    }
    eprintln!(
        "{} blobs uploaded ({} in chunks), {} mounted, {} already there; {} manifests",
        report.uploaded, report.chunked, report.mounted, report.existing, report.manifests
    );
    if report.resumed + report.restarted > 0 {
        eprintln!(
            "after failures: {} uploads resumed, {} started again",
            report.resumed, report.restarted
        );
    }
}

/// Runs `berth login`: checks the credentials against the registry, then stores them through
/// the credential helper the auth file names for the registry, else in the auth file (mode
/// 0600).
pub fn login(args: &LoginArgs) -> Result<()> {
    let Some(username) = args.username.clone() else {
        bail!("login needs --username (and the password on standard input with --password-stdin)");
    };
    if !args.password_stdin {
        bail!("pass the password on standard input with --password-stdin");
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("empty password on standard input");
    }
    let creds = Credentials { username, password };
    let mut opts = args.options.options();
    opts.credentials = Some(creds.clone());
    registry::check_login(&args.registry, &opts)
        .with_context(|| format!("logging in to {}", args.registry))?;
    let file = opts
        .auth_file
        .clone()
        .or_else(registry::default_auth_file)
        .context("no auth file: set HOME or DOCKER_CONFIG, or pass --auth-file")?;
    match registry::save_credentials_with(
        &file,
        &args.registry,
        &creds,
        opts.helper_path.as_deref(),
    )? {
        registry::SavedIn::Helper(h) => println!("Login succeeded (stored by {h})"),
        registry::SavedIn::File(f) => println!("Login succeeded ({})", f.display()),
        other => println!("Login succeeded ({other:?})"),
    }
    Ok(())
}

/// Runs `berth logout`: erases the registry's credentials from the credential helper the auth
/// file names for it, and drops its inline entries from the file.
pub fn logout(args: &LogoutArgs) -> Result<()> {
    let file = args
        .auth_file
        .clone()
        .or_else(registry::default_auth_file)
        .context("no auth file: set HOME or DOCKER_CONFIG, or pass --auth-file")?;
    let removed = registry::remove_credentials_with(&file, &args.registry, None)
        .with_context(|| format!("logging out of {}", args.registry))?;
    if removed.is_empty() {
        println!("Not logged in to {}", args.registry);
    }
    for r in removed {
        match r {
            registry::SavedIn::Helper(h) => println!("Removed login credentials ({h})"),
            registry::SavedIn::File(f) => println!("Removed login credentials ({})", f.display()),
            other => println!("Removed login credentials ({other:?})"),
        }
    }
    Ok(())
}
