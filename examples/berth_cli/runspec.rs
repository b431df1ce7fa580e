//! The runtime spec of a container: the image config's defaults (Entrypoint, Cmd, Env,
//! WorkingDir, User, Volumes) merged with the `run` options, in the shape runc's default spec
//! has (proc, dev, devpts, shm, mqueue, sys, cgroup; pid/ipc/uts/mount/cgroup namespaces;
//! masked and read-only paths) with Docker's default capability set.
//!
//! Users are resolved against the image's `/etc/passwd` and `/etc/group`, read from the
//! mounted root filesystem with `openat2(RESOLVE_IN_ROOT)` so a symlink in the image can never
//! make us read a host file (without openat2, each component is opened `O_NOFOLLOW`).
#![allow(dead_code)] // shared by the `berth` and `demo` examples, which use different parts

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use berth::runtime::oci_spec::runtime::{Process, Spec};
use oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};

/// The largest `/etc/passwd` or `/etc/group` we read.
const MAX_DB: u64 = 4 << 20;
/// The PATH used when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default capabilities.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The network of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace.
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

/// A bind mount from `--mount SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path (absolute).
    pub source: String,
    /// Container path (absolute).
    pub destination: String,
    /// Mounted read-only.
    pub readonly: bool,
}

impl BindMount {
    /// Parses `SRC:DST[:ro|rw]`.
    pub fn parse(text: &str) -> Result<BindMount> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, destination, readonly) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            [s, d, "rw"] => (*s, *d, false),
            _ => bail!("--mount {text:?}: expected SRC:DST[:ro]"),
        };
        if !source.starts_with('/') || !destination.starts_with('/') {
            bail!("--mount {text:?}: both paths must be absolute");
        }
        Ok(BindMount {
            source: source.to_owned(),
            destination: destination.to_owned(),
            readonly,
        })
    }
}

/// What `run` asks for on top of the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// `K=V` (or `K`, taken from our environment), applied over the image's Env.
    pub env: Vec<String>,
    /// `user[:group]` by name or number; the image's User when absent.
    pub user: Option<String>,
    /// The working directory; the image's WorkingDir (or `/`) when absent.
    pub workdir: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU quota in CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// Most processes.
    pub pids_limit: Option<i64>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Host network or a new empty one.
    pub network: Option<Network>,
}

/// Parses a size such as `256m`, `1g`, `512k` or `1048576` into bytes.
pub fn parse_size(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: i64 = digits
        .parse()
        .with_context(|| format!("invalid size {text:?} (e.g. 256m)"))?;
    if n <= 0 {
        bail!("invalid size {text:?}: must be positive");
    }
    n.checked_mul(mult)
        .with_context(|| format!("size {text:?} too large"))
}

/// A user resolved against the image's databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub additional_gids: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// Opens `rel` (relative to the root `dir`) for reading without ever leaving `dir`.
fn open_in_root(dir: &Path, rel: &str) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
    use nix::sys::stat::Mode;
    let root = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd: OwnedFd = match openat2(&root, rel, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOSYS) => {
            // No openat2: walk component by component, refusing every symlink.
            let mut cur = root;
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                if *part == ".." {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
                let last = i + 1 == parts.len();
                let flags = if last {
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
                } else {
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
                };
                cur = openat(&cur, *part, flags, Mode::empty())?;
            }
            cur
        }
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(file)
}

/// Reads a small text file of the image; a missing file is empty.
fn read_db(rootfs: &Path, rel: &str) -> Result<String> {
    match open_in_root(rootfs, rel) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_DB)
                .read_to_string(&mut text)
                .with_context(|| format!("reading /{rel} of the image"))?;
            Ok(text)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("opening /{rel} of the image")),
    }
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`; empty = root) against the
/// passwd and group texts, as Docker does: a numeric uid need not exist (its primary gid is
/// then 0), a name must; supplementary groups are the groups listing the user as a member.
pub fn resolve_user_in(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = match user.parse::<u32>() {
        Ok(uid) => entries
            .iter()
            .find(|f| f[2].parse::<u32>().ok() == Some(uid)),
        Err(_) => entries.iter().find(|f| f[0] == user),
    };
    let (uid, mut gid, name, home) = match (found, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .with_context(|| format!("bad uid in /etc/passwd for {}", f[0]))?,
            f[3].parse::<u32>()
                .with_context(|| format!("bad gid in /etc/passwd for {}", f[0]))?,
            Some(f[0]),
            f[5].to_owned(),
        ),
        (None, Ok(uid)) => (uid, 0, None, "/".to_owned()),
        (None, Err(_)) => bail!("unable to find user {user}: no matching entries in passwd file"),
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for f in &groups {
            if f[3].split(',').any(|m| m == name)
                && let Ok(n) = f[2].parse::<u32>()
                && n != gid
                && !additional_gids.contains(&n)
            {
                additional_gids.push(n);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Resolves a user against the image mounted at `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser> {
    let passwd = read_db(rootfs, "etc/passwd")?;
    let group = read_db(rootfs, "etc/group")?;
    resolve_user_in(spec, &passwd, &group)
}

/// Merges `overrides` (`K=V`, or `K` to copy our own variable) into `env`.
fn merge_env(env: &mut Vec<String>, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let entry = match o.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable {o:?}"),
            Some(_) => o.clone(),
            None => match std::env::var(o) {
                Ok(v) => format!("{o}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    Ok(())
}

fn has_var(env: &[String], key: &str) -> bool {
    env.iter().any(|e| e.split('=').next() == Some(key))
}

/// The command line: the image's Entrypoint, then the given command or else the image's Cmd.
///
/// Errors: an empty command line.
pub fn command(config: &ImageConfiguration, opts: &RunOptions) -> Result<Vec<String>> {
    let run = config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = run.entrypoint().clone().unwrap_or_default();
    if opts.cmd.is_empty() {
        args.extend(run.cmd().clone().unwrap_or_default());
    } else {
        args.extend(opts.cmd.iter().cloned());
    }
    if args.is_empty() {
        bail!("no command: the image has no Entrypoint or Cmd and none was given");
    }
    Ok(args)
}

/// The process: args ([`command`]), env, cwd and user from the image config and the options.
pub fn process(
    config: &ImageConfiguration,
    opts: &RunOptions,
    user: &ResolvedUser,
    hostname: &str,
) -> Result<Value> {
    let run = config.config().clone().unwrap_or_default();
    let args = command(config, opts)?;
    let mut env: Vec<String> = run.env().clone().unwrap_or_default();
    if !has_var(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    merge_env(&mut env, &[format!("HOSTNAME={hostname}")])?;
    if opts.tty && !has_var(&env, "TERM") {
        env.push("TERM=xterm".to_owned());
    }
    if !has_var(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    merge_env(&mut env, &opts.env)?;
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| run.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        bail!("the working directory {cwd:?} is not absolute");
    }
    let mut user_json = json!({ "uid": user.uid, "gid": user.gid });
    if !user.additional_gids.is_empty() {
        user_json["additionalGids"] = json!(user.additional_gids);
    }
    Ok(json!({
        "terminal": opts.tty,
        "user": user_json,
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": CAPS, "effective": CAPS, "permitted": CAPS
        },
        "noNewPrivileges": true
    }))
}

/// A process for `exec` (args given), in the container's environment.
pub fn exec_process(
    base: &Process,
    args: &[String],
    env: &[String],
    tty: bool,
    user: Option<&ResolvedUser>,
    cwd: Option<&str>,
) -> Result<Process> {
    let mut value = serde_json::to_value(base)?;
    value["args"] = json!(args);
    value["terminal"] = json!(tty);
    let mut merged: Vec<String> = base.env().clone().unwrap_or_default();
    merge_env(&mut merged, env)?;
    value["env"] = json!(merged);
    if let Some(u) = user {
        value["user"] = json!({ "uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids });
    }
    if let Some(c) = cwd {
        value["cwd"] = json!(c);
    }
    serde_json::from_value(value).context("building the exec process")
}

/// Standard mounts plus volumes (`(destination, host dir)`) and bind mounts.
fn mounts(volumes: &[(String, String)], binds: &[BindMount]) -> Vec<Value> {
    let mut m = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"] }),
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }),
    ];
    for (dst, src) in volumes {
        m.push(json!({ "destination": dst, "type": "bind", "source": src,
                       "options": ["rbind", "rw"] }));
    }
    for b in binds {
        m.push(
            json!({ "destination": b.destination, "type": "bind", "source": b.source,
                       "options": ["rbind", if b.readonly { "ro" } else { "rw" }] }),
        );
    }
    m
}

/// The whole spec: `process` (from [`process`]), root `rootfs`, mounts, namespaces, limits.
pub fn spec(
    process: Value,
    hostname: &str,
    opts: &RunOptions,
    volumes: &[(String, String)],
) -> Result<Spec> {
    let mut namespaces = vec![
        json!({ "type": "pid" }),
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
        json!({ "type": "cgroup" }),
    ];
    if opts.network.unwrap_or(Network::None) == Network::None {
        namespaces.push(json!({ "type": "network" }));
    }
    // Deny every device, then allow what runc allows by default (the runtime-spec's default
    // devices, ptys, and mknod of anything). berth-runtime appends the same allowances itself
    // (since it puts them after the spec's rules); listing them keeps the spec complete for
    // any runtime.
    let allow = |typ: &str, major: i64, minor: Option<i64>, access: &str| {
        let mut d = json!({ "allow": true, "type": typ, "major": major, "access": access });
        if let Some(m) = minor {
            d["minor"] = json!(m);
        }
        d
    };
    let mut resources = json!({ "devices": [
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "access": "m" },
        { "allow": true, "type": "b", "access": "m" },
        allow("c", 1, Some(3), "rwm"),
        allow("c", 1, Some(5), "rwm"),
        allow("c", 1, Some(7), "rwm"),
        allow("c", 1, Some(8), "rwm"),
        allow("c", 1, Some(9), "rwm"),
        allow("c", 5, Some(0), "rwm"),
        allow("c", 5, Some(1), "rwm"),
        allow("c", 5, Some(2), "rwm"),
        allow("c", 136, None, "rwm"),
    ] });
    if let Some(limit) = opts.memory {
        resources["memory"] = json!({ "limit": limit });
    }
    if let Some(cpus) = opts.cpus {
        if !(cpus > 0.0 && cpus <= 1024.0) {
            bail!("--cpus {cpus}: must be between 0 and 1024");
        }
        let period: u64 = 100_000;
        let quota = (cpus * period as f64).round() as i64;
        resources["cpu"] = json!({ "quota": quota.max(1000), "period": period });
    }
    if let Some(pids) = opts.pids_limit {
        resources["pids"] = json!({ "limit": pids });
    }
    let doc = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": { "path": "rootfs", "readonly": false },
        "hostname": hostname,
        "mounts": mounts(volumes, &opts.mounts),
        "linux": {
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    serde_json::from_value(doc).context("building the runtime spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1000:app:/home/app:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nstaff:x:50:app\n";

    #[test]
    fn users_resolve_like_docker() {
        let root = resolve_user_in("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = resolve_user_in("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![10, 50]);
        let by_uid = resolve_user_in("1000:staff", PASSWD, GROUP).unwrap();
        assert_eq!((by_uid.uid, by_uid.gid), (1000, 50));
        let unknown = resolve_user_in("4242:7", PASSWD, GROUP).unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 7, "/")
        );
        assert!(resolve_user_in("ghost", PASSWD, GROUP).is_err());
        assert!(resolve_user_in("app:nogroup", PASSWD, GROUP).is_err());
    }

    #[test]
    fn sizes_and_mounts_parse() {
        assert_eq!(parse_size("256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("-1").is_err() && parse_size("lots").is_err());
        let m = BindMount::parse("/a:/b:ro").unwrap();
        assert!(m.readonly && m.source == "/a" && m.destination == "/b");
        assert!(BindMount::parse("a:/b").is_err());
    }
}
