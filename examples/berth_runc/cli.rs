//! The command line, spoken as runc speaks it.
//!
//! runc parses with urfave/cli, which is looser than clap: long options may be written with one
//! dash (`-bundle`), boolean options may carry `=true`/`=false`, and options may follow the
//! container id (`create ID --bundle B`). [`normalise_argv`] rewrites such an argv into the form
//! clap expects before [`Cli`] parses it; everything runc's callers (containerd's shim, conmon,
//! people) send is accepted. `exec` is the exception runc also makes: everything after the
//! container id is the command and its arguments, never options of ours.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default state root, shared with the `berth` command line and the metrics exporter.
pub const DEFAULT_ROOT: &str = "/run/berth";

/// A runc-compatible OCI runtime over the berth-runtime library.
#[derive(Debug, Parser)]
#[command(name = "berth-runc", disable_version_flag = true)]
pub struct Cli {
    /// Root directory for storage of container state (should be on tmpfs).
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Set the log file to write runtime logs to (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Set the log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Enable debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Enable systemd cgroup support (not supported by berth-runc: an error).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Ignore cgroup permission errors ("true", "false" or "auto").
    #[arg(long, global = true, require_equals = true, num_args = 0..=1,
          default_missing_value = "true", value_parser = ["true", "false", "auto"])]
    pub rootless: Option<String>,
    /// Path to the criu binary (accepted for compatibility; checkpointing is not supported).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long, global = true)]
    pub version: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The version text printed by `--version`, laid out as runc lays out its own.
pub fn version_text() -> String {
    format!(
        "{}\nspec: {}\nberth-runtime: {}",
        env!("CARGO_PKG_VERSION"),
        crate::features::OCI_VERSION_MAX,
        env!("CARGO_PKG_VERSION")
    )
}

/// Log line format of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// logrus's text format: `time="..." level=error msg="..."`.
    Text,
    /// One JSON object a line: `{"level":"error","msg":"...","time":"..."}`.
    Json,
}

/// Output format of `list` and `ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its init waits for `start`).
    Create(CreateArgs),
    /// Start the user process of a created container.
    Start(IdArg),
    /// Create and start a container, in the foreground unless --detach.
    Run(RunArgs),
    /// Print the OCI state of a container as JSON.
    State(IdArg),
    /// Send a signal to the container's init (or all its processes).
    Kill(KillArgs),
    /// Delete a container and the resources it holds.
    Delete(DeleteArgs),
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// List the processes running inside a container.
    Ps(PsArgs),
    /// List containers under the root.
    List(ListArgs),
    /// Suspend all processes of a container (cgroup freezer).
    Pause(IdArg),
    /// Resume all processes of a paused container.
    Resume(IdArg),
    /// Update the cgroup resource limits of a container.
    Update(UpdateArgs),
    /// Print container events and resource statistics.
    Events(EventsArgs),
    /// Write a default config.json into a bundle.
    Spec(SpecArgs),
    /// Print the runtime's features as runtime-spec features JSON.
    Features,
}

/// A command taking only the container id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The container id.
    pub id: String,
}

/// Options shared by `create` and `run`.
#[derive(Debug, Args)]
pub struct CreateOpts {
    /// Path to the root of the bundle directory (default: the current directory).
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Path to a unix socket that receives the pty master of a terminal container.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container init's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root to jail the process inside its rootfs (MS_MOVE + chroot).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many additional fds (from 3 on) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container id.
    pub id: String,
    /// Options.
    #[command(flatten)]
    pub opts: CreateOpts,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container id.
    pub id: String,
    /// Options shared with `create`.
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Detach from the container's process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the container after its process exits (foreground only).
    #[arg(long)]
    pub keep: bool,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The container id.
    pub id: String,
    /// The signal: a name with or without SIG, or a number (default SIGTERM).
    pub signal: Option<String>,
    /// Send the signal to all processes in the container.
    #[arg(short = 'a', long)]
    pub all: bool,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The container id.
    pub id: String,
    /// Kill a running container (SIGKILL) before deleting it.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Path to a process.json describing the process (instead of the command).
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Path to a unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Detach from the process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the process's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE; repeatable).
    #[arg(short = 'e', long)]
    pub env: Vec<String>,
    /// The working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// The user: uid[:gid].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Add a capability (repeatable).
    #[arg(short = 'c', long)]
    pub cap: Vec<String>,
    /// Additional gids (repeatable).
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass this many additional fds (from 3 on) to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allow exec in a paused container (accepted; berth refuses a frozen cgroup).
    #[arg(long, hide = true)]
    pub ignore_paused: bool,
    /// AppArmor profile of the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux process label.
    #[arg(short = 'l', long = "process-label")]
    pub process_label: Option<String>,
    /// The container id.
    pub id: String,
    /// The command and its arguments (when no --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The container id.
    pub id: String,
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Extra `ps` options (table format only; accepted and ignored).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub ps_args: Vec<String>,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Print only the container ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The container id.
    pub id: String,
    /// Path to a LinuxResources JSON file, or `-` for stdin.
    #[arg(short = 'r', long)]
    pub resources: Option<String>,
    /// Memory limit in bytes (suffixes k, m, g accepted).
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit) in bytes.
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes.
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// CPU CFS quota in microseconds.
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may use (e.g. 0-1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of pids (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10–1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The container id.
    pub id: String,
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Interval between statistics (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

/// `spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The bundle directory to write config.json into.
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    // `--rootless` (a spec for a rootless container) is the global option of that name.
}

/// How an option of some command takes its value, for [`normalise_argv`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Value,
    Flag,
}

/// The long options of a command (and the global ones) with whether they take a value.
fn options_of(command: Option<&str>) -> &'static [(&'static str, Takes)] {
    use Takes::{Flag, Value};
    match command {
        None => &[
            ("root", Value),
            ("log", Value),
            ("log-format", Value),
            ("criu", Value),
            ("debug", Flag),
            ("systemd-cgroup", Flag),
            ("version", Flag),
            ("help", Flag),
        ],
        Some("create") | Some("run") => &[
            ("bundle", Value),
            ("console-socket", Value),
            ("pid-file", Value),
            ("preserve-fds", Value),
            ("no-pivot", Flag),
            ("no-new-keyring", Flag),
            ("detach", Flag),
            ("keep", Flag),
            ("no-subreaper", Flag),
        ],
        Some("exec") => &[
            ("process", Value),
            ("console-socket", Value),
            ("pid-file", Value),
            ("env", Value),
            ("cwd", Value),
            ("user", Value),
            ("cap", Value),
            ("additional-gids", Value),
            ("preserve-fds", Value),
            ("apparmor", Value),
            ("process-label", Value),
            ("cgroup", Value),
            ("tty", Flag),
            ("detach", Flag),
            ("no-new-privs", Flag),
            ("ignore-paused", Flag),
            ("no-subreaper", Flag),
        ],
        Some("delete") => &[("force", Flag)],
        Some("kill") => &[("all", Flag)],
        Some("ps") | Some("list") => &[("format", Value), ("quiet", Flag)],
        Some("update") => &[
            ("resources", Value),
            ("memory", Value),
            ("memory-reservation", Value),
            ("memory-swap", Value),
            ("cpu-quota", Value),
            ("cpu-period", Value),
            ("cpu-shares", Value),
            ("cpuset-cpus", Value),
            ("cpuset-mems", Value),
            ("pids-limit", Value),
            ("blkio-weight", Value),
        ],
        Some("events") => &[("interval", Value), ("stats", Flag)],
        Some("spec") => &[("bundle", Value)],
        _ => &[],
    }
}

/// Short options that take a value, per command (`-b B`, `-p P`, ...).
fn short_values_of(command: Option<&str>) -> &'static [char] {
    match command {
        Some("create") | Some("run") | Some("spec") => &['b'],
        Some("exec") => &['p', 'e', 'u', 'c', 'g', 'l'],
        Some("ps") | Some("list") => &['f'],
        Some("update") => &['r'],
        _ => &[],
    }
}

/// Rewrites a runc-style argv into the form [`Cli`] parses.
///
/// - `-name` (one dash, a known long option) becomes `--name`, as Go's flag package allows;
/// - `--flag=true` becomes `--flag`, `--flag=false` is dropped;
/// - for `exec`, a `--` is put after the container id, so the command's own options (`ls -l`)
///   are never taken for ours.
///
/// Options after the container id need no rewrite: clap accepts them where runc does.
pub fn normalise_argv(argv: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len() + 1);
    let mut iter = argv.into_iter();
    if let Some(argv0) = iter.next() {
        out.push(argv0);
    }
    let mut command: Option<String> = None;
    let mut exec_id_seen = false;
    let mut rest_verbatim = false;
    while let Some(arg) = iter.next() {
        if rest_verbatim {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str().map(str::to_owned) else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            rest_verbatim = true;
            continue;
        }
        if let Some(option) = text.strip_prefix('-').filter(|t| !t.is_empty()) {
            let long = option.strip_prefix('-').unwrap_or(option);
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let takes = lookup(command.as_deref(), name);
            let is_long = option.starts_with('-') || (name.len() > 1 && takes.is_some());
            if is_long {
                match (takes, value) {
                    (Some(Takes::Flag), Some("false")) => {}
                    (Some(Takes::Flag), Some("true")) => out.push(format!("--{name}").into()),
                    (Some(Takes::Value), None) => {
                        out.push(format!("--{name}").into());
                        if let Some(v) = iter.next() {
                            out.push(v);
                        }
                    }
                    (Some(_), Some(v)) => out.push(format!("--{name}={v}").into()),
                    (Some(Takes::Flag), None) | (None, _) => out.push(format!("--{long}").into()),
                }
            } else {
                // A short option (cluster): its value is the rest of the cluster or the next arg.
                out.push(arg);
                let last = option.chars().last();
                let value_short = short_values_of(command.as_deref());
                if option.chars().count() == 1
                    && last.is_some_and(|c| value_short.contains(&c))
                    && let Some(v) = iter.next()
                {
                    out.push(v);
                }
            }
            continue;
        }
        // A positional argument.
        if command.is_none() {
            command = Some(text.clone());
            out.push(arg);
            continue;
        }
        out.push(arg);
        if command.as_deref() == Some("exec") && !exec_id_seen {
            exec_id_seen = true;
            out.push("--".into());
            rest_verbatim = true;
        }
    }
    out
}

/// Finds how option `name` of `command` (or a global option) takes its value.
fn lookup(command: Option<&str>, name: &str) -> Option<Takes> {
    let in_table = |table: &[(&str, Takes)]| {
        table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, takes)| *takes)
    };
    command
        .and_then(|c| in_table(options_of(Some(c))))
        .or_else(|| in_table(options_of(None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("berth-runc".to_string()).chain(norm(args));
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"))
    }

    fn norm(args: &[&str]) -> Vec<String> {
        let argv = std::iter::once("berth-runc").chain(args.iter().copied());
        normalise_argv(argv.map(OsString::from).collect())
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_options_gain_a_dash() {
        assert_eq!(
            norm(&["-root", "/r", "create", "-bundle", "b", "x"]),
            ["--root", "/r", "create", "--bundle", "b", "x"]
        );
    }

    #[test]
    fn boolean_values_are_folded() {
        assert_eq!(
            norm(&["delete", "--force=true", "x"]),
            ["delete", "--force", "x"]
        );
        assert_eq!(norm(&["delete", "--force=false", "x"]), ["delete", "x"]);
    }

    #[test]
    fn exec_command_options_stay_the_commands() {
        assert_eq!(
            norm(&["exec", "-t", "--cwd", "/", "x", "ls", "-l", "--all"]),
            ["exec", "-t", "--cwd", "/", "x", "--", "ls", "-l", "--all"]
        );
        // A short value option's value is not taken for the id.
        assert_eq!(
            norm(&["exec", "-u", "1000", "x", "id"]),
            ["exec", "-u", "1000", "x", "--", "id"]
        );
    }

    #[test]
    fn options_after_the_id_parse() {
        let cli = parse(&["create", "c1", "--bundle", "/b", "--pid-file", "p"]);
        match cli.command {
            Some(Command::Create(c)) => {
                assert_eq!(c.id, "c1");
                assert_eq!(c.opts.bundle, PathBuf::from("/b"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containerd_shim_argv_parses() {
        let argv = [
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "c1",
        ];
        let cli = parse(&argv);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(cli.command, Some(Command::Create(_))));
    }

    #[test]
    fn spec_rootless_is_the_global_option() {
        let cli = parse(&["spec", "--rootless", "-b", "/x"]);
        assert_eq!(cli.rootless.as_deref(), Some("true"));
        assert!(matches!(cli.command, Some(Command::Spec(SpecArgs { .. }))));
    }

    #[test]
    fn rootless_value_does_not_eat_the_command() {
        let cli = parse(&["--rootless", "list", "-q"]);
        assert_eq!(cli.rootless.as_deref(), Some("true"));
        assert!(matches!(
            cli.command,
            Some(Command::List(ListArgs { quiet: true, .. }))
        ));
    }
}
