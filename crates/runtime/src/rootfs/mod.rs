//! The container's root filesystem.
//!
//! [`RootfsPlan::new`] runs in the runtime before the clone: it validates
//! the spec's root, mounts, devices, masked and read-only paths and sysctls
//! and prepares every string the child will need. [`setup`] runs in the
//! container's init (new mount namespace) and performs, in order:
//!
//! 1. propagation of `/` (`rslave` unless `rootfsPropagation` says otherwise),
//! 2. a recursive bind of the rootfs onto itself, opened as `rootfd`,
//! 3. the spec mounts in order, each target resolved as an fd inside
//!    `rootfd` and mounted via `/proc/self/fd/N`,
//! 4. default and spec devices, `/dev` symlinks and the `ptmx` link,
//! 5. sysctls (through a procfs fd checked with `fstatfs`),
//! 6. masked and read-only paths,
//! 7. `pivot_root` (or `MS_MOVE` + `chroot` when `no_pivot`), then the
//!    read-only remount of `/` and `rootfsPropagation`.

mod devices;
mod mounts;
pub(crate) mod paths;
mod setup;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};

pub(crate) use devices::DevicePlan;
pub(crate) use mounts::MountPlan;
pub(crate) use mounts::PROC_SUPER_MAGIC as PROC_MAGIC;
use paths::InRootPath;
pub(crate) use setup::setup;

use crate::error::{Error, Result};

/// A prepared sysctl write.
#[derive(Debug, Clone)]
pub(crate) struct SysctlPlan {
    /// The key as written in the spec.
    pub(crate) key: String,
    /// The path relative to `/proc` (`sys/net/ipv4/ip_forward`).
    pub(crate) path: CString,
    pub(crate) value: CString,
}

/// Everything the child needs to build the root filesystem.
#[derive(Debug)]
pub(crate) struct RootfsPlan {
    pub(crate) rootfs: CString,
    pub(crate) rootfs_display: PathBuf,
    pub(crate) root_propagation: libc::c_ulong,
    pub(crate) rootfs_propagation: Option<libc::c_ulong>,
    pub(crate) mounts: Vec<MountPlan>,
    pub(crate) setup_dev: bool,
    pub(crate) dev: InRootPath,
    pub(crate) device_parents: Vec<InRootPath>,
    pub(crate) devices: Vec<DevicePlan>,
    pub(crate) bind_devices: bool,
    pub(crate) ptmx: bool,
    pub(crate) symlinks: Vec<(CString, CString)>,
    pub(crate) sysctl: Vec<SysctlPlan>,
    pub(crate) masked: Vec<InRootPath>,
    pub(crate) readonly_paths: Vec<InRootPath>,
    pub(crate) readonly_root: bool,
    pub(crate) no_pivot: bool,
}

fn cstr(field: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::spec(field, "contains a NUL byte"))
}

/// One v1 hierarchy mounted on the host: (directory name, mount data).
fn host_cgroup_v1_hierarchies() -> Vec<(String, String)> {
    let host = crate::cgroups::host::get();
    let info = &host.mountinfo;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let _source = post.next();
        let Some(super_opts) = post.next() else {
            continue;
        };
        let Some(mountpoint) = pre.split_whitespace().nth(4) else {
            continue;
        };
        let Some(name) = Path::new(mountpoint).file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let data: Vec<&str> = super_opts
            .split(',')
            .filter(|o| {
                !matches!(
                    *o,
                    "rw" | "ro" | "xattr" | "clone_children" | "noprefix" | "relatime"
                )
            })
            .filter(|o| !o.starts_with("release_agent="))
            .collect();
        if data.is_empty() || out.iter().any(|(n, _)| n == name) {
            continue;
        }
        out.push((name.to_string(), data.join(",")));
    }
    out
}

/// Expands a `cgroup` mount into what this host needs: `cgroup2` on a
/// unified host, otherwise a tmpfs with one v1 hierarchy per directory.
fn expand_cgroup_mount(m: &Mount) -> Result<Vec<Mount>> {
    let unified = crate::cgroups::is_unified();
    let mut opts: Vec<String> = m
        .options()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o != "rbind" && o != "bind")
        .collect();
    if unified {
        let mut m = m.clone();
        m.set_typ(Some("cgroup2".into()));
        m.set_source(Some("cgroup2".into()));
        m.set_options(Some(opts));
        return Ok(vec![m]);
    }
    let dest = m.destination().clone();
    let mut tmpfs_opts: Vec<String> = opts
        .iter()
        .filter(|o| matches!(o.as_str(), "nosuid" | "nodev" | "noexec"))
        .cloned()
        .collect();
    tmpfs_opts.push("mode=755".into());
    let mut out = vec![
        MountBuilder::default()
            .destination(dest.clone())
            .typ("tmpfs")
            .source("tmpfs")
            .options(tmpfs_opts)
            .build()
            .map_err(|e| Error::spec("mounts (cgroup)", e.to_string()))?,
    ];
    opts.retain(|o| {
        matches!(
            o.as_str(),
            "nosuid" | "nodev" | "noexec" | "ro" | "rw" | "relatime"
        )
    });
    for (name, data) in host_cgroup_v1_hierarchies() {
        let mut o = opts.clone();
        o.push(data);
        out.push(
            MountBuilder::default()
                .destination(dest.join(&name))
                .typ("cgroup")
                .source("cgroup")
                .options(o)
                .build()
                .map_err(|e| Error::spec("mounts (cgroup)", e.to_string()))?,
        );
    }
    Ok(out)
}

impl RootfsPlan {
    /// Prepares the root filesystem of `spec` in `bundle`.
    ///
    /// Errors: [`Error::InvalidSpec`] for a missing root, relative or `..`
    /// destinations, a symlinked `/proc` or `/sys`, or non-procfs `/proc`
    /// mounts; [`Error::Io`] when a bind source cannot be read.
    pub(crate) fn new(
        spec: &Spec,
        bundle: &Path,
        user_ns: bool,
        no_pivot: bool,
    ) -> Result<RootfsPlan> {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::spec("root", "missing"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let rootfs = rootfs
            .canonicalize()
            .map_err(|e| Error::io("resolve rootfs", &rootfs, e))?;
        if !rootfs.is_dir() {
            return Err(Error::spec(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }
        let linux = spec.linux().as_ref();

        let mut spec_mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            if m.typ().as_deref() == Some("cgroup") {
                spec_mounts.extend(expand_cgroup_mount(m)?);
            } else {
                spec_mounts.push(m.clone());
            }
        }
        let mut mounts = Vec::with_capacity(spec_mounts.len());
        for (i, m) in spec_mounts.iter().enumerate() {
            mounts.push(MountPlan::from_spec(i, m, bundle)?);
        }
        // /proc and /sys must be ordinary directories in the rootfs (CVE-2019-16884).
        for top in ["proc", "sys"] {
            if mounts.iter().any(|m| m.dest.is_top(top)) {
                let p = rootfs.join(top);
                if let Ok(meta) = std::fs::symlink_metadata(&p)
                    && !meta.is_dir()
                {
                    return Err(Error::spec(
                        format!("mount /{top}"),
                        format!("{} must be mounted on ordinary directory", p.display()),
                    ));
                }
            }
        }

        let dev_mount = mounts.iter().find(|m| m.dest.is_top("dev"));
        let setup_dev =
            !matches!(dev_mount, Some(m) if matches!(m.kind, mounts::MountKind::Bind { .. }));
        let ptmx = mounts
            .iter()
            .any(|m| m.dest.display == "/dev/pts" && m.fstype.as_deref() == Some(c"devpts"));

        let mut devices = Vec::new();
        if setup_dev {
            for (path, major, minor) in devices::DEFAULT_DEVICES {
                devices.push(DevicePlan::default_device(path, *major, *minor)?);
            }
        }
        for (i, d) in linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = DevicePlan::from_spec(i, d)?;
            devices.retain(|x: &DevicePlan| x.path.display != p.path.display);
            devices.push(p);
        }
        let device_parents = devices::parents_of(&devices)?;

        let mut symlinks = Vec::new();
        for (name, target) in devices::DEV_SYMLINKS {
            symlinks.push((cstr("dev symlink", name)?, cstr("dev symlink", target)?));
        }
        if Path::new("/proc/kcore").exists() {
            symlinks.push((
                cstr("dev symlink", "core")?,
                cstr("dev symlink", "/proc/kcore")?,
            ));
        }

        let mut sysctl = Vec::new();
        let mut keys: Vec<(&String, &String)> = linux
            .and_then(|l| l.sysctl().as_ref())
            .into_iter()
            .flatten()
            .collect();
        keys.sort();
        for (k, v) in keys {
            let field = format!("linux.sysctl[{k}]");
            if k.is_empty() || k.split(['.', '/']).any(|c| c.is_empty() || c == "..") {
                return Err(Error::spec(field, "invalid key"));
            }
            sysctl.push(SysctlPlan {
                key: k.clone(),
                path: cstr(&field, &format!("sys/{}", k.replace('.', "/")))?,
                value: cstr(&field, v)?,
            });
        }

        let in_root_list = |field: &str, v: Option<&Vec<String>>| -> Result<Vec<InRootPath>> {
            v.into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| {
                    let f = format!("{field}[{i}]");
                    if !p.starts_with('/') {
                        return Err(Error::spec(f, format!("{p} is not absolute")));
                    }
                    InRootPath::new(&f, Path::new(p))
                })
                .collect()
        };
        let masked = in_root_list(
            "linux.maskedPaths",
            linux.and_then(|l| l.masked_paths().as_ref()),
        )?;
        let readonly_paths = in_root_list(
            "linux.readonlyPaths",
            linux.and_then(|l| l.readonly_paths().as_ref()),
        )?;

        let (root_propagation, rootfs_propagation) = match linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(p) => {
                let flag = mounts::propagation_flag(p).ok_or_else(|| {
                    Error::spec(
                        "linux.rootfsPropagation",
                        format!("unknown propagation {p:?}"),
                    )
                })?;
                // Mounts of a shared root must not propagate back to the host:
                // start from rslave and apply the wish to the new root.
                (libc::MS_SLAVE | libc::MS_REC, Some(flag | libc::MS_REC))
            }
            None => (libc::MS_SLAVE | libc::MS_REC, None),
        };

        let rootfs_s = rootfs
            .to_str()
            .ok_or_else(|| Error::spec("root.path", "not valid UTF-8"))?;
        Ok(RootfsPlan {
            rootfs: cstr("root.path", rootfs_s)?,
            rootfs_display: rootfs.clone(),
            root_propagation,
            rootfs_propagation,
            mounts,
            setup_dev,
            dev: InRootPath::new("dev", Path::new("/dev"))?,
            device_parents,
            devices,
            bind_devices: user_ns,
            ptmx,
            symlinks,
            sysctl,
            masked,
            readonly_paths,
            readonly_root: root.readonly().unwrap_or(false),
            no_pivot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, RootBuilder, SpecBuilder};
    use std::collections::HashMap;

    fn spec_with(mounts: Vec<Mount>, sysctl: HashMap<String, String>) -> Spec {
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .mounts(mounts)
            .linux(LinuxBuilder::default().sysctl(sysctl).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn symlinked_proc_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.path().join("rootfs/proc")).unwrap();
        let proc_mount = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let e = RootfsPlan::new(
            &spec_with(vec![proc_mount], HashMap::new()),
            dir.path(),
            false,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("ordinary directory"), "{e}");
    }

    #[test]
    fn sysctl_keys_become_proc_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        let mut s = HashMap::new();
        s.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        let plan = RootfsPlan::new(&spec_with(vec![], s), dir.path(), false, false).unwrap();
        assert_eq!(plan.sysctl[0].path, c"sys/net/ipv4/ip_forward".to_owned());
        let mut bad = HashMap::new();
        bad.insert("net..x".to_string(), "1".to_string());
        assert!(RootfsPlan::new(&spec_with(vec![], bad), dir.path(), false, false).is_err());
    }

    #[test]
    fn cgroup_mount_expands_per_hierarchy_on_v1() {
        let m = MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(vec!["nosuid".to_string(), "ro".to_string()])
            .build()
            .unwrap();
        let out = expand_cgroup_mount(&m).unwrap();
        if crate::cgroups::is_unified() {
            assert_eq!(out.len(), 1);
        } else {
            assert_eq!(out[0].typ().as_deref(), Some("tmpfs"));
            assert!(
                out.iter()
                    .skip(1)
                    .all(|m| m.typ().as_deref() == Some("cgroup"))
            );
        }
    }
}
