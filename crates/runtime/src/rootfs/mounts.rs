//! Spec mounts: option parsing (runtime side) and mounting through fds (child side).

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

use oci_spec::runtime::Mount;

use super::paths::InRootPath;
use crate::error::{Error, Result, Step};
use crate::sys::{self, FdPath, SysResult};

/// `statfs` magic of procfs.
pub(crate) const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `statfs` magic of sysfs.
pub(crate) const SYSFS_MAGIC: i64 = 0x6265_6572;

/// How a mount is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountKind {
    /// A bind mount (`bind` / `rbind`).
    Bind {
        /// `rbind`.
        recursive: bool,
    },
    /// A filesystem mount (`tmpfs`, `proc`, ...).
    Fs,
}

/// One prepared mount.
#[derive(Debug, Clone)]
pub(crate) struct MountPlan {
    pub(crate) dest: InRootPath,
    pub(crate) kind: MountKind,
    pub(crate) source: Option<CString>,
    pub(crate) fstype: Option<CString>,
    /// `MS_*` flags other than bind/rec/propagation.
    pub(crate) flags: libc::c_ulong,
    pub(crate) data: Option<CString>,
    pub(crate) propagation: Vec<libc::c_ulong>,
    /// Create the destination as a file (bind of a non-directory).
    pub(crate) leaf_is_file: bool,
    /// Refuse symlinks anywhere on the destination path (/proc, /sys, /dev).
    pub(crate) no_symlinks: bool,
    /// After mounting, the destination must carry this filesystem magic.
    pub(crate) expect_magic: Option<i64>,
}

/// Parsed `options` of a mount.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ParsedOptions {
    pub(crate) flags: libc::c_ulong,
    pub(crate) bind: Option<bool>,
    pub(crate) propagation: Vec<libc::c_ulong>,
    pub(crate) data: Vec<String>,
}

/// Parses mount options into flags, propagation and filesystem data.
pub(crate) fn parse_options(field: &str, options: &[String]) -> Result<ParsedOptions> {
    let mut p = ParsedOptions::default();
    for o in options {
        let (clear, flag): (bool, libc::c_ulong) = match o.as_str() {
            "defaults" => (false, 0),
            "ro" => (false, libc::MS_RDONLY),
            "rw" => (true, libc::MS_RDONLY),
            "suid" => (true, libc::MS_NOSUID),
            "nosuid" => (false, libc::MS_NOSUID),
            "dev" => (true, libc::MS_NODEV),
            "nodev" => (false, libc::MS_NODEV),
            "exec" => (true, libc::MS_NOEXEC),
            "noexec" => (false, libc::MS_NOEXEC),
            "sync" => (false, libc::MS_SYNCHRONOUS),
            "async" => (true, libc::MS_SYNCHRONOUS),
            "dirsync" => (false, libc::MS_DIRSYNC),
            "mand" => (false, libc::MS_MANDLOCK),
            "nomand" => (true, libc::MS_MANDLOCK),
            "atime" => (true, libc::MS_NOATIME),
            "noatime" => (false, libc::MS_NOATIME),
            "diratime" => (true, libc::MS_NODIRATIME),
            "nodiratime" => (false, libc::MS_NODIRATIME),
            "relatime" => (false, libc::MS_RELATIME),
            "norelatime" => (true, libc::MS_RELATIME),
            "strictatime" => (false, libc::MS_STRICTATIME),
            "nostrictatime" => (true, libc::MS_STRICTATIME),
            "bind" => {
                p.bind = Some(p.bind.unwrap_or(false));
                continue;
            }
            "rbind" => {
                p.bind = Some(true);
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                p.propagation.push(propagation_flag(o).unwrap_or(0));
                continue;
            }
            "tmpcopyup" => continue,
            "idmap" | "ridmap" => {
                return Err(Error::Unsupported {
                    feature: format!("{field}: {o}"),
                    reason: "id-mapped mounts are not implemented".into(),
                });
            }
            _ => {
                p.data.push(o.clone());
                continue;
            }
        };
        if clear {
            p.flags &= !flag;
        } else {
            p.flags |= flag;
        }
    }
    Ok(p)
}

/// The `MS_*` flag of a propagation name (`rprivate`, `slave`, ...).
pub(crate) fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

fn cstr(field: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::spec(field, "contains a NUL byte"))
}

/// The files below `/proc` that may be bind-mounted over (lxcfs style).
const PROC_BIND_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/sys/kernel/ns_last_pid",
];

impl MountPlan {
    /// Prepares spec mount number `index` (`bundle` anchors relative sources).
    pub(crate) fn from_spec(index: usize, m: &Mount, bundle: &Path) -> Result<MountPlan> {
        let field = format!("mounts[{index}]");
        let dest_path = m.destination();
        if !dest_path.is_absolute() {
            return Err(Error::spec(
                format!("{field}.destination"),
                format!("{} is not absolute", dest_path.display()),
            ));
        }
        let dest = InRootPath::new(&format!("{field}.destination"), dest_path)?;
        let opts = parse_options(&field, m.options().as_deref().unwrap_or(&[]))?;
        let typ = m.typ().clone().unwrap_or_default();
        let is_bind = opts.bind.is_some() || typ == "bind";
        let data = if opts.data.is_empty() {
            None
        } else {
            Some(cstr(&field, &opts.data.join(","))?)
        };
        let on_proc = dest.starts_with_top("proc");
        let on_sys = dest.starts_with_top("sys");
        // /dev too: a symlinked /dev would redirect the device nodes and the
        // ptmx link (CVE-2026-41579 class).
        let on_dev = dest.starts_with_top("dev");

        if is_bind {
            let src = m.source().as_ref().ok_or_else(|| {
                Error::spec(format!("{field}.source"), "a bind mount needs a source")
            })?;
            let src = if src.is_absolute() {
                src.clone()
            } else {
                bundle.join(src)
            };
            let meta =
                std::fs::metadata(&src).map_err(|e| Error::io("stat bind source", &src, e))?;
            if on_proc && !PROC_BIND_ALLOWED.contains(&dest.display.as_str()) {
                return Err(Error::spec(
                    format!("{field}.destination"),
                    format!(
                        "{} cannot be a bind mount: /proc must be a real procfs mount",
                        dest.display
                    ),
                ));
            }
            let src_s = src
                .to_str()
                .ok_or_else(|| Error::spec(format!("{field}.source"), "not valid UTF-8"))?;
            return Ok(MountPlan {
                kind: MountKind::Bind {
                    recursive: opts.bind == Some(true),
                },
                source: Some(cstr(&field, src_s)?),
                fstype: None,
                flags: opts.flags,
                data,
                propagation: opts.propagation,
                leaf_is_file: !meta.is_dir(),
                no_symlinks: on_proc || on_sys || on_dev,
                expect_magic: None,
                dest,
            });
        }

        if typ.is_empty() {
            return Err(Error::spec(
                format!("{field}.type"),
                "missing filesystem type",
            ));
        }
        let expect_magic = match typ.as_str() {
            "proc" if dest.is_top("proc") => Some(PROC_SUPER_MAGIC),
            "sysfs" if dest.is_top("sys") => Some(SYSFS_MAGIC),
            _ => None,
        };
        if on_proc && !dest.is_top("proc") && !PROC_BIND_ALLOWED.contains(&dest.display.as_str()) {
            return Err(Error::spec(
                format!("{field}.destination"),
                format!(
                    "{} cannot be mounted over: only /proc itself may be mounted",
                    dest.display
                ),
            ));
        }
        if dest.is_top("proc") && typ != "proc" {
            return Err(Error::spec(
                format!("{field}.type"),
                format!("/proc must be mounted as proc, not {typ}"),
            ));
        }
        let source = m
            .source()
            .as_ref()
            .map_or_else(|| typ.clone(), |s| s.to_string_lossy().into_owned());
        Ok(MountPlan {
            kind: MountKind::Fs,
            source: Some(cstr(&field, &source)?),
            fstype: Some(cstr(&field, &typ)?),
            flags: opts.flags,
            data,
            propagation: opts.propagation,
            leaf_is_file: false,
            no_symlinks: on_proc || on_sys || on_dev,
            expect_magic,
            dest,
        })
    }

    /// Mounts inside `rootfd`. Async-signal-safe. Returns the failing step.
    pub(crate) fn apply(&self, rootfd: RawFd) -> std::result::Result<(), (Step, i32)> {
        let fd = self
            .dest
            .create_all(rootfd, self.leaf_is_file, self.no_symlinks)
            .map_err(|e| (Step::ResolveMountTarget, e))?;
        let target = FdPath::new(fd);
        let r = match self.kind {
            MountKind::Bind { recursive } => {
                let mut f = libc::MS_BIND;
                if recursive {
                    f |= libc::MS_REC;
                }
                sys::mount(self.source.as_deref(), target.as_cstr(), None, f, None)
            }
            MountKind::Fs => sys::mount(
                self.source.as_deref(),
                target.as_cstr(),
                self.fstype.as_deref(),
                self.flags,
                self.data.as_deref(),
            ),
        };
        sys::close(fd);
        r.map_err(|e| (Step::Mount, e))?;

        if matches!(self.kind, MountKind::Bind { .. }) && self.flags != 0 {
            self.with_reopened(rootfd, |fd| {
                let locked = sys::locked_mount_flags(fd)?;
                let mut f = libc::MS_BIND | libc::MS_REMOUNT | self.flags | locked;
                if self.flags & libc::MS_RELATIME == 0 && self.flags & libc::MS_NOATIME != 0 {
                    f &= !libc::MS_RELATIME;
                }
                sys::mount(None, FdPath::new(fd).as_cstr(), None, f, None)
            })
            .map_err(|e| (Step::RemountReadonly, e))?;
        }
        for &p in &self.propagation {
            self.with_reopened(rootfd, |fd| {
                sys::mount(None, FdPath::new(fd).as_cstr(), None, p, None)
            })
            .map_err(|e| (Step::MountPropagation, e))?;
        }
        if let Some(magic) = self.expect_magic {
            self.with_reopened(rootfd, |fd| {
                if sys::fs_magic(fd)? == magic {
                    Ok(())
                } else {
                    Err(libc::EXDEV)
                }
            })
            .map_err(|e| (Step::Mount, e))?;
        }
        Ok(())
    }

    /// Re-resolves the destination (now the new mount's root) and runs `f` on it.
    fn with_reopened(
        &self,
        rootfd: RawFd,
        f: impl FnOnce(RawFd) -> SysResult<()>,
    ) -> SysResult<()> {
        let fd = self.dest.open(rootfd, self.no_symlinks)?;
        let r = f(fd);
        sys::close(fd);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_become_flags_data_and_propagation() {
        let p = parse_options(
            "m",
            &opts(&["nosuid", "noexec", "ro", "mode=755", "size=64k", "rslave"]),
        )
        .unwrap();
        assert_eq!(p.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RDONLY);
        assert_eq!(p.data, vec!["mode=755", "size=64k"]);
        assert_eq!(p.propagation, vec![libc::MS_SLAVE | libc::MS_REC]);
        let p = parse_options("m", &opts(&["ro", "rw", "rbind"])).unwrap();
        assert_eq!(p.flags, 0);
        assert_eq!(p.bind, Some(true));
        assert!(parse_options("m", &opts(&["idmap"])).is_err());
    }

    #[test]
    fn bind_over_proc_is_refused() {
        let m = MountBuilder::default()
            .destination("/proc")
            .typ("bind")
            .source("/tmp")
            .options(opts(&["rbind"]))
            .build()
            .unwrap();
        let e = MountPlan::from_spec(0, &m, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("real procfs"), "{e}");
        let m = MountBuilder::default()
            .destination("/proc")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap();
        assert!(MountPlan::from_spec(0, &m, Path::new("/")).is_err());
    }
}
