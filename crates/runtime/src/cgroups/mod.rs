//! Cgroups through cgroups-rs: v1, v2, and hybrid hosts.
//!
//! A container's cgroup path comes from `linux.cgroupsPath` (absolute or
//! relative, both taken below the hierarchy roots) or defaults to
//! `/berth/<id>`. Resources are applied with cgroups-rs's `FsManager`
//! (its `oci` feature takes `LinuxResources` directly), which is opened
//! only when the spec sets any besides devices; creation, attaching,
//! freezing and removal use its `fs::Cgroup`. What cgroups-rs lacks
//! (listing the container's processes from `cgroup.procs`, the paths per
//! controller for metrics, the hybrid host's cgroup2 directory, cgroup v2
//! device rules) is done here directly, and so are the v1 device rules
//! (`device_rules`: one open of `devices.allow`/`devices.deny` for the
//! whole list instead of one per rule).
//!
//! # Hosts
//! - **v1**: one directory per controller hierarchy; device rules are
//!   written to the devices controller (`devices.allow`/`devices.deny`).
//! - **v2** (unified): one directory; device rules become an eBPF program
//!   ([`device_filter`] compiles it, [`bpf`] attaches it).
//! - **hybrid** (v1 controllers plus a cgroup2 tree, usually at
//!   `/sys/fs/cgroup/unified`): resources go to the v1 hierarchies, and,
//!   as runc does, the container also gets a directory in the cgroup2 tree
//!   (reported as [`CgroupPaths::unified`], where metrics find PSI and v2
//!   hugetlb); its processes are moved there too and it is removed with
//!   the others. Device rules are enforced twice: by the v1 devices
//!   controller and by the eBPF program attached to that cgroup2
//!   directory, since the kernel consults both for every device access;
//!   when the kernel refuses the program (no cgroup BPF, no privilege for
//!   it), the v1 controller alone, with a warning (see `Cgroup::apply`).
//!
//! # Device rules
//! The effective list is always built the same way (`Cgroup::apply`):
//! deny everything, then the given rules in their order, then the runtime's
//! allowances (mknod of any node, use of the default devices). An `update`
//! that carries `devices` replaces the list built at create time (it is
//! not appended to it); one without `devices` leaves it as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::manager::Manager;
use cgroups_rs::{CgroupPid, FreezerState};
use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};

pub mod bpf;
pub mod device_filter;
mod device_rules;
pub(crate) mod host;

use device_rules::{device_rules, write_v1_device_rules};

/// Whether `/sys/fs/cgroup` is a pure cgroup v2 (unified) mount.
pub fn is_unified() -> bool {
    hierarchies::is_cgroup2_unified_mode()
}

/// Where a container's cgroup lives on this host, per controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupPaths {
    /// The cgroup's path relative to the hierarchy roots (`/berth/<id>`).
    pub relative: String,
    /// The cgroup2 directory: on a unified (v2) host, the cgroup; on a
    /// hybrid host, the container's directory in the cgroup2 tree (which
    /// holds its processes, PSI files and device program, and exists only
    /// for containers the runtime created with this tree present).
    pub unified: Option<PathBuf>,
    /// On a v1 or hybrid host: controller name (`memory`, `cpu`, ...) → directory.
    pub v1: BTreeMap<String, PathBuf>,
}

impl CgroupPaths {
    /// Computes the directories of `relative` from this host's cgroup mounts
    /// (`/proc/self/mountinfo`): every v1 hierarchy, and the first cgroup2
    /// mount whose root is the hierarchy's root. Only mounts that are
    /// visible are taken: a mount hidden by a later mount on or above its
    /// mount point (e.g. a tmpfs mounted over `/sys/fs/cgroup` that shows
    /// only the v1 hierarchies) still has its mountinfo line, but its mount
    /// point is then another file system (or missing), which is checked by
    /// comparing the mount point's device with the line's `major:minor`.
    /// The table is read once per process and mount namespace, and again
    /// after the kernel reports a change of it.
    pub fn for_relative(relative: &str) -> CgroupPaths {
        CgroupPaths::for_relative_on(relative, host::get().unified)
    }

    /// [`CgroupPaths::for_relative`] on a host already known to be unified or not.
    fn for_relative_on(relative: &str, unified: bool) -> CgroupPaths {
        let rel = relative.trim_start_matches('/');
        let mut out = CgroupPaths {
            relative: format!("/{rel}"),
            ..Default::default()
        };
        if unified {
            out.unified = Some(Path::new("/sys/fs/cgroup").join(rel));
            return out;
        }
        let host = host::get();
        out.unified = host.mounts.unified.as_ref().map(|m| m.join(rel));
        out.v1 = host
            .mounts
            .v1
            .iter()
            .map(|(name, m)| (name.clone(), m.join(rel)))
            .collect();
        out
    }

    /// Adds the directories of `rel` below the cgroup mounts listed in
    /// `info` (mountinfo format) on a non-unified host, skipping mounts for
    /// which `visible(mount point, major:minor)` is false.
    fn add_mounts(&mut self, info: &str, rel: &str, visible: impl Fn(&str, &str) -> bool) {
        let out = self;
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mut post = post.split_whitespace();
            let fstype = post.next();
            if fstype != Some("cgroup") && fstype != Some("cgroup2") {
                continue;
            }
            let mut pre = pre.split_whitespace();
            let (Some(dev), Some(root), Some(mountpoint)) = (pre.nth(2), pre.next(), pre.next())
            else {
                continue;
            };
            if fstype == Some("cgroup2") {
                if root == "/" && out.unified.is_none() && visible(mountpoint, dev) {
                    out.unified = Some(Path::new(mountpoint).join(rel));
                }
                continue;
            }
            let _ = post.next();
            let Some(opts) = post.next() else { continue };
            let mut seen_visible = None;
            for o in opts.split(',') {
                let name = match o {
                    "rw" | "ro" | "xattr" | "clone_children" | "noprefix" => continue,
                    o if o.starts_with("release_agent=") => continue,
                    o => o.strip_prefix("name=").unwrap_or(o),
                };
                if out.v1.contains_key(name) {
                    continue;
                }
                if !*seen_visible.get_or_insert_with(|| visible(mountpoint, dev)) {
                    break;
                }
                out.v1
                    .insert(name.to_string(), Path::new(mountpoint).join(rel));
            }
        }
    }
}

/// Whether the file system mounted at `mountpoint` is the one mountinfo
/// lists as `dev` (`major:minor`): false for a mount point hidden by a
/// later mount, or missing.
fn mount_is_visible(mountpoint: &str, dev: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((major, minor)) = dev.split_once(':') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    std::fs::metadata(mountpoint).is_ok_and(|m| m.dev() == libc::makedev(major, minor))
}

/// Resolves the cgroup path of a container (relative to the hierarchy roots, no leading `/`).
///
/// Errors: [`Error::Unsupported`] for systemd-style `slice:prefix:name`
/// paths; [`Error::InvalidSpec`] for `..` components.
pub(crate) fn resolve_path(spec_path: Option<&Path>, id: &str) -> Result<String> {
    let p = match spec_path {
        Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
        _ => format!("/berth/{id}"),
    };
    if cgroups_rs::manager::is_systemd_cgroup(&p) {
        return Err(Error::Unsupported {
            feature: format!("linux.cgroupsPath {p:?}"),
            reason: "the systemd cgroup driver is not implemented".into(),
        });
    }
    if p.split('/').any(|c| c == "..") {
        return Err(Error::spec(
            "linux.cgroupsPath",
            format!("{p} contains '..'"),
        ));
    }
    let rel = p.trim_matches('/').to_string();
    if rel.is_empty() {
        return Err(Error::spec(
            "linux.cgroupsPath",
            "must not be the root cgroup",
        ));
    }
    Ok(rel)
}

/// A container's cgroup.
///
/// The host's layout (unified or not, the directories per controller) is
/// looked up once per handle: at [`Cgroup::load`] (cgroups-rs's hierarchy)
/// and on first use ([`CgroupPaths`]), not again for every operation.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: String,
    cg: cgroups_rs::fs::Cgroup,
    unified: bool,
    paths: std::cell::OnceCell<CgroupPaths>,
}

fn cg_err(op: &'static str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        op,
        path: format!("/{path}"),
        reason: e.to_string(),
    }
}

impl Cgroup {
    /// A handle on an existing (or not yet created) cgroup.
    pub(crate) fn load(path: &str) -> Cgroup {
        let host = host::get();
        Cgroup {
            path: path.to_string(),
            cg: cgroups_rs::fs::Cgroup::load(host.hierarchy(), path),
            unified: host.unified,
            paths: std::cell::OnceCell::new(),
        }
    }

    /// The cgroup's directories on this host.
    fn paths(&self) -> &CgroupPaths {
        self.paths
            .get_or_init(|| CgroupPaths::for_relative_on(&self.path, self.unified))
    }

    /// On a hybrid host: the container's directory in the cgroup2 tree
    /// (whether it exists or not). `None` on v1-only and unified hosts
    /// (cgroups-rs drives a unified host's directory itself).
    fn hybrid_dir(&self) -> Option<&Path> {
        if self.unified {
            return None;
        }
        self.paths().unified.as_deref()
    }

    /// The cgroup2 directory that carries the device program: the cgroup on
    /// a unified host, its cgroup2 directory on a hybrid host.
    fn bpf_dir(&self) -> Option<&Path> {
        self.paths().unified.as_deref()
    }

    /// Creates the cgroup in every hierarchy (on a hybrid host also in the
    /// cgroup2 tree) and applies `resources`, device rules included (see
    /// [`Cgroup::apply`]; no rules in the spec still installs the runtime's
    /// deny-all-but-defaults list). On error, what was created is removed.
    ///
    /// Creating the directories is retried a few times: a concurrent
    /// [`Cgroup::remove_empty_parents`] (another container's delete) may
    /// remove the shared parent between its creation and the creation of
    /// this cgroup below it.
    pub(crate) fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        let path = &self.path;
        let mut attempt = 1;
        loop {
            let made = self.cg.create().map_err(|e| cg_err("create", path, e));
            let made = made.and_then(|()| match self.hybrid_dir() {
                Some(dir) => std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("create cgroup2 directory", dir, e)),
                None => Ok(()),
            });
            match made {
                Ok(()) => break,
                Err(e) if attempt >= 5 => {
                    let _ = self.destroy();
                    return Err(e);
                }
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let mut r = resources.cloned().unwrap_or_default();
        if r.devices().is_none() {
            r.set_devices(Some(Vec::new()));
        }
        if let Err(e) = self.apply(&r) {
            let _ = self.destroy();
            return Err(e);
        }
        Ok(())
    }

    /// Applies (or updates) resource limits.
    ///
    /// When `resources.devices` is set, the cgroup's device rules are
    /// replaced by [`device_rules`] of them: deny everything, the given
    /// rules in order, then the runtime's default allowances (mknod of any
    /// node, use of null, zero, full, random, urandom, tty, ptmx, pts),
    /// last so that a spec's usual leading deny-all rule cannot revoke them.
    /// Devices listed in `linux.devices` are not allowed implicitly: the
    /// spec allows them with its own rules. The list goes to the v1 devices
    /// controller (v1 and hybrid hosts; there the replacement passes
    /// through a moment of deny-all, as the controller offers no atomic
    /// swap) and, compiled by [`device_filter`], to the cgroup2 directory
    /// as an eBPF program (unified and hybrid hosts), which replaces the
    /// previous one without a looser moment (see [`bpf`]).
    ///
    /// The other resources go through cgroups-rs's `FsManager`, which is
    /// not even opened when none is set (only what the spec sets is written).
    ///
    /// # A kernel that refuses device programs
    /// On a hybrid host the v1 devices controller holds the whole list and
    /// is the authority (runc installs no program there at all); the
    /// program only repeats it. So when the kernel refuses this process
    /// device programs as such ([`bpf::BpfError::is_refusal`]: `ENOSYS`,
    /// `EINVAL` without a verifier log, `EPERM`, e.g. a kernel without
    /// cgroup BPF, a runtime without `CAP_BPF`/`CAP_SYS_ADMIN`, or one
    /// nested in a container whose seccomp profile forbids bpf(2)), the v1
    /// controller alone enforces the rules and a warning is logged, unless
    /// a program of this runtime is already attached to the cgroup2
    /// directory (an earlier create or update installed it and it cannot
    /// be replaced now): it would keep enforcing the previous rules beside
    /// the new v1 list, so that is an error. When even looking at the
    /// attached programs is refused, none is assumed (a kernel that refuses
    /// bpf(2) now never attached one, unless the runtime's own privileges
    /// changed since). On a unified host the program is the only
    /// enforcement: any failure is an error.
    ///
    /// Errors: [`Error::InvalidSpec`] for an invalid device rule (nothing
    /// is changed then); [`Error::Cgroup`] naming the cgroup when
    /// cgroups-rs, the devices controller or the bpf(2) calls fail (with
    /// the verifier log when the program is rejected), except for the
    /// hybrid host's fallback above. An error after the v1 list was
    /// written leaves it in place: v1 and a remaining program then both
    /// apply, never looser than either.
    pub(crate) fn apply(&self, resources: &LinuxResources) -> Result<()> {
        let mut r = resources.clone();
        let mut rules = None;
        if let Some(spec_rules) = r.devices().clone() {
            device_filter::rules_from_oci(&spec_rules)?;
            let all = device_rules(Some(&spec_rules));
            let compiled = all
                .iter()
                .map(|rule| device_filter::DeviceRule::from_oci(rule, "linux.resources.devices"))
                .collect::<Result<Vec<_>>>()?;
            rules = Some(compiled);
            r.set_devices(None);
        }
        let others = r.cpu().is_some()
            || r.memory().is_some()
            || r.pids().is_some()
            || r.block_io().is_some()
            || r.hugepage_limits().is_some()
            || r.network().is_some();
        if others {
            let mut m = cgroups_rs::manager::FsManager::new(&self.path)
                .map_err(|e| cg_err("open", &self.path, e))?;
            m.set(&r)
                .map_err(|e| cg_err("set resources", &self.path, e))?;
        }
        let Some(compiled) = rules else {
            return Ok(());
        };
        if !self.unified {
            let dir = self
                .paths()
                .v1
                .get("devices")
                .ok_or_else(|| cg_err("set resources", &self.path, "no devices controller"))?;
            write_v1_device_rules(dir, &compiled)
                .map_err(|e| cg_err("set resources", &self.path, e))?;
        }
        let Some(dir) = self.bpf_dir() else {
            return Ok(());
        };
        if !self.unified && !dir.is_dir() {
            // A hybrid container created before its cgroup2 directory existed.
            return Ok(());
        }
        let program = device_filter::compile(&compiled);
        match bpf::install(dir, &program) {
            Ok(id) => {
                tracing::debug!(cgroup = %self.path, dir = %dir.display(), prog_id = id, "device filter installed");
                Ok(())
            }
            Err(e) if !self.unified && e.is_refusal() => self.v1_devices_alone(dir, e),
            Err(e) => Err(cg_err("install device filter", &self.path, e)),
        }
    }

    /// The hybrid host's fallback when the kernel refused the device
    /// program (`refusal`, see [`Cgroup::apply`]): fine, with a warning,
    /// unless a program of this runtime is attached to the cgroup2
    /// directory `dir` and would keep enforcing earlier rules.
    fn v1_devices_alone(&self, dir: &Path, refusal: bpf::BpfError) -> Result<()> {
        let stale = bpf::attached(dir)
            .map(|progs| progs.into_iter().find(|p| p.name == bpf::PROG_NAME))
            .unwrap_or_default();
        if let Some(old) = stale {
            return Err(cg_err(
                "install device filter",
                &self.path,
                format!(
                    "{refusal}; the earlier device program (id {}) on {} cannot be replaced and would keep enforcing the previous rules",
                    old.id,
                    dir.display()
                ),
            ));
        }
        let cgroup = format!("/{}", self.path);
        tracing::warn!(
            %cgroup,
            error = %refusal,
            "the kernel refused the cgroup2 device program on this hybrid host: the v1 devices controller alone enforces the rules"
        );
        Ok(())
    }

    /// Moves process `pid` into the cgroup (on a hybrid host also into its
    /// cgroup2 directory, when that exists).
    pub(crate) fn add(&self, pid: libc::pid_t) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid { pid: pid as u64 })
            .map_err(|e| cg_err("add process", &self.path, e))?;
        if let Some(dir) = self.hybrid_dir().filter(|d| d.is_dir()) {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| Error::io("add process to", procs, e))?;
        }
        Ok(())
    }

    fn freezer(&self) -> Result<&FreezerController> {
        self.cg
            .controller_of::<FreezerController>()
            .ok_or_else(|| cg_err("freeze", &self.path, "no freezer controller"))
    }

    /// Freezes every process of the cgroup and waits until they are frozen.
    pub(crate) fn freeze(&self) -> Result<()> {
        let f = self.freezer()?;
        f.freeze().map_err(|e| cg_err("freeze", &self.path, e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pause = Backoff::new(Duration::from_millis(2));
        loop {
            match f.state() {
                Ok(FreezerState::Frozen) => return Ok(()),
                Ok(_) if Instant::now() < deadline => pause.sleep(),
                Ok(s) => {
                    return Err(cg_err(
                        "freeze",
                        &self.path,
                        format!(
                            "still {} after 10s",
                            if matches!(s, FreezerState::Freezing) {
                                "freezing"
                            } else {
                                "thawed"
                            }
                        ),
                    ));
                }
                Err(e) => return Err(cg_err("freeze", &self.path, e)),
            }
        }
    }

    /// Thaws the cgroup.
    pub(crate) fn thaw(&self) -> Result<()> {
        self.freezer()?
            .thaw()
            .map_err(|e| cg_err("thaw", &self.path, e))
    }

    /// Whether the cgroup is frozen (or freezing).
    pub(crate) fn is_frozen(&self) -> bool {
        self.freezer()
            .ok()
            .and_then(|f| f.state().ok())
            .is_some_and(|s| matches!(s, FreezerState::Frozen | FreezerState::Freezing))
    }

    /// The pids in the cgroup (from `cgroup.procs`).
    pub(crate) fn pids(&self) -> Result<Vec<libc::pid_t>> {
        let paths = self.paths();
        // A hybrid host's v1 hierarchies are authoritative (the cgroup2
        // directory may be missing for older containers).
        let dir = ["pids", "freezer", "memory", "cpu"]
            .iter()
            .find_map(|c| paths.v1.get(*c).cloned())
            .or_else(|| paths.unified.clone())
            .ok_or_else(|| cg_err("list processes", &self.path, "no cgroup hierarchy found"))?;
        let procs = dir.join("cgroup.procs");
        let text = match std::fs::read_to_string(&procs) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", procs, e)),
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends `signal` to every process in the cgroup.
    pub(crate) fn signal_all(&self, signal: libc::c_int) -> Result<()> {
        for pid in self.pids()? {
            // SAFETY: kill with plain integers; ESRCH for exited pids is fine.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// Kills everything in the cgroup (freezing it meanwhile so nothing
    /// forks away) and waits until it is empty, up to `timeout`.
    pub(crate) fn kill_all(&self, timeout: Duration) -> Result<()> {
        if self.pids()?.is_empty() {
            return Ok(());
        }
        let frozen = self.freeze().is_ok();
        self.signal_all(libc::SIGKILL)?;
        if frozen {
            let _ = self.thaw();
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Backoff::new(Duration::from_millis(5));
        while !self.pids()?.is_empty() {
            if Instant::now() > deadline {
                return Err(cg_err("kill", &self.path, "processes survived SIGKILL"));
            }
            pause.sleep();
        }
        Ok(())
    }

    /// Removes the cgroup directories (the cgroup must be empty), on a
    /// hybrid host its cgroup2 directory too; a missing directory is fine.
    /// Removing a cgroup2 directory releases its device program.
    pub(crate) fn destroy(&self) -> Result<()> {
        self.cg
            .delete()
            .map_err(|e| cg_err("remove", &self.path, e))?;
        let Some(dir) = self.hybrid_dir() else {
            return Ok(());
        };
        // Processes killed a moment ago may still be leaving it.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pause = Backoff::new(Duration::from_millis(5));
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    pause.sleep();
                }
                Err(e) => return Err(Error::io("remove cgroup2 directory", dir, e)),
            }
        }
    }

    /// Removes the now-empty parent directories of this (already destroyed)
    /// cgroup in every hierarchy, innermost first, up to but not including
    /// the hierarchy root.
    ///
    /// Only for parents the runtime created itself (the default
    /// `/berth/<id>` path, see [`is_default_path`]); parents named by a
    /// caller's `cgroupsPath` belong to the caller. A parent still in use
    /// (`EBUSY`/`ENOTEMPTY`: another container's cgroup lives below it)
    /// stops the walk in that hierarchy; a missing one is skipped. Never
    /// fails: other errors are logged, the container's own cgroup is gone
    /// already.
    pub(crate) fn remove_empty_parents(&self) {
        let paths = self.paths();
        let mut dirs: Vec<&PathBuf> = paths.v1.values().chain(paths.unified.iter()).collect();
        dirs.sort();
        dirs.dedup();
        let depth = self.path.trim_matches('/').split('/').count();
        for dir in dirs {
            let mut parent = dir.parent();
            for _ in 1..depth {
                let Some(p) = parent else { break };
                match std::fs::remove_dir(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EBUSY) | Some(libc::ENOTEMPTY)
                        ) =>
                    {
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %p.display(), %e, "removing an empty parent cgroup");
                        break;
                    }
                }
                parent = p.parent();
            }
        }
    }
}

/// The pauses of a wait for a state the kernel sends no event about (a v1
/// cgroup emptying, a freezer settling, a cgroup2 directory becoming
/// removable): 100 µs first, doubling up to `max`, so that the usual quick
/// change is seen within a fraction of a millisecond and a slow one costs
/// few checks.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_micros(100).min(max),
            max,
        }
    }

    /// The next pause.
    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.next_pause());
    }
}

/// Whether `rel` (as returned by [`resolve_path`]) is the runtime's own
/// default path for container `id` (`berth/<id>`), whose parent the runtime
/// creates and may therefore remove again.
pub(crate) fn is_default_path(rel: &str, id: &str) -> bool {
    rel.trim_matches('/') == format!("berth/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_resolution() {
        assert_eq!(resolve_path(None, "abc").unwrap(), "berth/abc");
        assert_eq!(resolve_path(Some(Path::new("/a/b")), "x").unwrap(), "a/b");
        assert_eq!(
            resolve_path(Some(Path::new("rel/c")), "x").unwrap(),
            "rel/c"
        );
        assert!(resolve_path(Some(Path::new("/a/../b")), "x").is_err());
        assert_eq!(
            resolve_path(Some(Path::new("system.slice:berth:abc")), "x")
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Unavailable
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(2));
        let pauses: Vec<u128> = (0..7).map(|_| b.next_pause().as_micros()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(
            Backoff::new(Duration::from_micros(50)).next_pause(),
            Duration::from_micros(50)
        );
    }

    #[test]
    fn hybrid_mountinfo_gives_v1_and_unified_paths() {
        let info = "\
25 20 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/devices rw,nosuid shared:15 - cgroup cgroup rw,devices
90 80 0:23 /some/ctr /mnt/bound rw - cgroup2 cgroup2 rw
";
        let mut p = CgroupPaths::default();
        p.add_mounts(info, "berth/x", |_, _| true);
        assert_eq!(
            p.unified,
            Some(PathBuf::from("/sys/fs/cgroup/unified/berth/x"))
        );
        assert_eq!(
            p.v1.get("devices"),
            Some(&PathBuf::from("/sys/fs/cgroup/devices/berth/x"))
        );
        assert_eq!(
            p.v1.get("cpuacct"),
            Some(&PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/x"))
        );
        assert!(p.v1.contains_key("systemd"));
        assert_eq!(p.v1.len(), 4);

        // A cgroup2 mount of a subtree (a bind mount) is not the hierarchy root.
        let mut p = CgroupPaths::default();
        p.add_mounts(info.lines().last().unwrap(), "berth/x", |_, _| true);
        assert_eq!(p.unified, None);
    }

    /// The mountinfo of `shared/bench/cgv1-view.sh`: a tmpfs over
    /// `/sys/fs/cgroup` with the v1 hierarchies bound again; the hybrid
    /// cgroup2 mount is still listed but hidden.
    #[test]
    fn hidden_mounts_are_skipped() {
        let info = "\
47 46 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
56 47 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
57 47 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
82 47 0:42 / /sys/fs/cgroup rw - tmpfs anchors-cgv1 rw,mode=755
70 82 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
71 82 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
";
        let visible = |mountpoint: &str, dev: &str| match mountpoint {
            "/sys/fs/cgroup/unified" => false,
            "/sys/fs/cgroup/devices" => dev == "0:33",
            _ => true,
        };
        let mut p = CgroupPaths::default();
        p.add_mounts(info, "berth/x", visible);
        assert_eq!(p.unified, None);
        assert_eq!(
            p.v1.get("memory"),
            Some(&PathBuf::from("/sys/fs/cgroup/memory/berth/x"))
        );
        assert_eq!(
            p.v1.get("devices"),
            Some(&PathBuf::from("/sys/fs/cgroup/devices/berth/x"))
        );
        // A hierarchy whose only line is hidden is left out.
        let mut p = CgroupPaths::default();
        p.add_mounts(info, "berth/x", |m, _| m != "/sys/fs/cgroup/memory");
        assert!(!p.v1.contains_key("memory"));
    }

    #[test]
    fn visibility_compares_the_mount_points_device() {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let proc_dev = info
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some("/proc"))
            .filter_map(|l| l.split_whitespace().nth(2))
            .next_back()
            .unwrap();
        assert!(mount_is_visible("/proc", proc_dev));
        assert!(!mount_is_visible("/proc", "0:0"));
        assert!(!mount_is_visible("/nonexistent-berth-mount", proc_dev));
        assert!(!mount_is_visible("/proc", "garbage"));
    }

    #[test]
    fn paths_cover_this_hosts_hierarchies() {
        let p = CgroupPaths::for_relative("/berth/x");
        assert_eq!(p.relative, "/berth/x");
        if is_unified() {
            assert_eq!(p.unified, Some(PathBuf::from("/sys/fs/cgroup/berth/x")));
        } else if Path::new("/sys/fs/cgroup/memory").is_dir() {
            assert_eq!(
                p.v1.get("memory"),
                Some(&PathBuf::from("/sys/fs/cgroup/memory/berth/x"))
            );
            // A hybrid host's cgroup2 tree.
            if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
                assert_eq!(
                    p.unified,
                    Some(PathBuf::from("/sys/fs/cgroup/unified/berth/x"))
                );
            }
        }
    }
}
