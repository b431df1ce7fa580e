//! `berth-runc`: an OCI runtime that speaks runc's command line, over the berth-runtime library.
//!
//! Engines drive runtimes through runc's command line: containerd's shim
//! (`containerd-shim-runc-v2`, which takes the runtime binary from its `BinaryName` option or
//! `ctr run --runc-binary`), conmon for podman (`podman --runtime`), and so Kubernetes through
//! CRI. This binary speaks that language — the same commands, options, output and exit codes —
//! so it can stand in for runc. Each invocation performs one step on one container; the state
//! lives under `--root` (default `/run/berth`, shared with the `berth` command line and the
//! metrics exporter), so separate processes drive one container.
//!
//! Errors: exit code 1 and one `error` line in the log (`--log`, `--log-format text|json`,
//! what containerd's shim and conmon read back), as runc does; `run` and foreground `exec`
//! exit with the container process's status (128 + signal when it was killed).
//!
//! Layout: [`cli`] parses, `lifecycle`/`exec`/`inspect`/`resources` perform the commands,
//! [`stats`] puts statistics in runc's layout, [`spec`] and [`features`] print documents,
//! [`log`] writes the log.

#[path = "berth_runc/cli.rs"]
mod cli;
#[path = "berth_runc/exec.rs"]
mod exec;
#[path = "berth_runc/features.rs"]
mod features;
#[path = "berth_runc/foreground.rs"]
mod foreground;
#[path = "berth_runc/inspect.rs"]
mod inspect;
#[path = "berth_runc/lifecycle.rs"]
mod lifecycle;
#[path = "berth_runc/log.rs"]
mod log;
#[path = "berth_runc/resources.rs"]
mod resources;
#[path = "berth_runc/signal.rs"]
mod signal;
#[path = "berth_runc/spec.rs"]
mod spec;
#[path = "berth_runc/stats.rs"]
mod stats;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let argv = cli::normalise_argv(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) = log::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!(
            "open log {}: {e}",
            cli.log.as_deref().unwrap_or_else(|| "".as_ref()).display()
        );
        return ExitCode::from(1);
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            log::fatal(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// Runs the command; `Ok` carries the exit code (non-zero only for `run`/`exec` whose process
/// failed).
fn dispatch(cli: Cli) -> Result<ExitCode> {
    if cli.version {
        println!("berth-runc version {}", cli::version_text());
        return Ok(ExitCode::SUCCESS);
    }
    if cli.systemd_cgroup {
        bail!("systemd cgroup driver is not supported by berth-runc: use the cgroupfs driver");
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return Ok(ExitCode::SUCCESS);
    };
    let root = cli.root.clone();
    let root = root.as_path();
    log::log(
        log::Level::Debug,
        &format!("command {command:?} root {}", root.display()),
    );
    match command {
        Command::Create(args) => lifecycle::create(root, &args.id, &args.opts).map(ok),
        Command::Start(args) => lifecycle::start(root, &args.id).map(ok),
        Command::Run(args) => lifecycle::run(root, &args),
        Command::State(args) => inspect::state(root, &args.id).map(ok),
        Command::Kill(args) => lifecycle::kill(root, &args).map(ok),
        Command::Delete(args) => lifecycle::delete(root, &args.id, args.force).map(ok),
        Command::Exec(args) => exec::exec(root, &args),
        Command::Ps(args) => inspect::ps(root, &args).map(ok),
        Command::List(args) => inspect::list(root, &args).map(ok),
        Command::Pause(args) => resources::pause(root, &args.id).map(ok),
        Command::Resume(args) => resources::resume(root, &args.id).map(ok),
        Command::Update(args) => resources::update(root, &args).map(ok),
        Command::Events(args) => resources::events(root, &args).map(ok),
        Command::Spec(args) => {
            let rootless = cli.rootless.as_deref() == Some("true");
            spec::write_spec(&args.bundle, rootless).map(ok)
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&features::features())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ok((): ()) -> ExitCode {
    ExitCode::SUCCESS
}
