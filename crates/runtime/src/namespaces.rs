//! Namespaces: which to create, which to join (by path), and the user
//! namespace's id maps.
//!
//! Joined namespaces are opened here (`O_RDONLY | O_CLOEXEC`) before the
//! clone; the child `setns`es them, the user namespace first so that the
//! others are joined with its privileges. Namespaces to create are
//! `unshare`d by the first child; pid and time namespaces only apply to its
//! children, which is why the container's init is a second clone.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// One namespace to join.
#[derive(Debug)]
pub(crate) struct JoinNs {
    pub(crate) fd: OwnedFd,
    pub(crate) nstype: libc::c_int,
    pub(crate) path: PathBuf,
}

/// Prepared namespace operations.
#[derive(Debug, Default)]
pub(crate) struct NsPlan {
    /// Namespaces to join, user namespace first.
    pub(crate) join: Vec<JoinNs>,
    /// `CLONE_NEW*` flags to unshare (without `CLONE_NEWUSER`).
    pub(crate) unshare: libc::c_int,
    /// Create a user namespace (maps written by the runtime).
    pub(crate) new_user: bool,
    pub(crate) uid_map: Vec<u8>,
    pub(crate) gid_map: Vec<u8>,
    /// Contents for `/proc/self/timens_offsets`.
    pub(crate) time_offsets: Option<CString>,
}

/// The `CLONE_NEW*` flag of a namespace type.
pub(crate) fn clone_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The `/proc/<pid>/ns/` file name of a namespace type.
pub(crate) fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn map_text(maps: &[LinuxIdMapping]) -> Vec<u8> {
    let mut s = String::new();
    for m in maps {
        s.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    s.into_bytes()
}

impl NsPlan {
    /// Prepares the namespaces of `spec`.
    ///
    /// Errors: [`Error::InvalidSpec`] for duplicate types, a user namespace
    /// without mappings, time offsets without a new time namespace, or no
    /// mount namespace; [`Error::Io`] when a namespace path cannot be opened.
    pub(crate) fn new(spec: &Spec) -> Result<NsPlan> {
        let linux = spec.linux().as_ref();
        let mut plan = NsPlan::default();
        let mut seen = 0;
        let mut has_mount = false;
        let mut join_user = None;
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            let flag = clone_flag(ns.typ());
            if seen & flag != 0 {
                return Err(Error::spec(
                    "linux.namespaces",
                    format!("{} appears twice", proc_name(ns.typ())),
                ));
            }
            seen |= flag;
            if ns.typ() == LinuxNamespaceType::Mount {
                has_mount = true;
            }
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    let f = File::open(path).map_err(|e| Error::io("open namespace", path, e))?;
                    let j = JoinNs {
                        fd: OwnedFd::from(f),
                        nstype: flag,
                        path: path.clone(),
                    };
                    if ns.typ() == LinuxNamespaceType::User {
                        join_user = Some(j);
                    } else {
                        plan.join.push(j);
                    }
                }
                _ => {
                    if ns.typ() == LinuxNamespaceType::User {
                        plan.new_user = true;
                    } else {
                        plan.unshare |= flag;
                    }
                }
            }
        }
        if let Some(j) = join_user {
            plan.join.insert(0, j);
        }
        if !has_mount {
            return Err(Error::spec(
                "linux.namespaces",
                "a mount namespace is required to set up the root filesystem",
            ));
        }
        if plan.new_user {
            let uids = linux.and_then(|l| l.uid_mappings().as_ref());
            let gids = linux.and_then(|l| l.gid_mappings().as_ref());
            match (uids, gids) {
                (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => {
                    plan.uid_map = map_text(u);
                    plan.gid_map = map_text(g);
                }
                _ => {
                    return Err(Error::spec(
                        "linux.uidMappings",
                        "a new user namespace needs uid and gid mappings",
                    ));
                }
            }
        }
        if let Some(offsets) = linux.and_then(|l| l.time_offsets().as_ref()) {
            if plan.unshare & libc::CLONE_NEWTIME == 0 {
                return Err(Error::spec(
                    "linux.timeOffsets",
                    "time offsets need a new time namespace",
                ));
            }
            let mut s = String::new();
            let mut keys: Vec<_> = offsets.keys().collect();
            keys.sort();
            for k in keys {
                let o = &offsets[k];
                let clock = match k.as_str() {
                    "monotonic" | "boottime" => k.as_str(),
                    _ => {
                        return Err(Error::spec(
                            "linux.timeOffsets",
                            format!("unknown clock {k:?}"),
                        ));
                    }
                };
                s.push_str(&format!(
                    "{clock} {} {}\n",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                ));
            }
            plan.time_offsets =
                Some(CString::new(s).map_err(|_| Error::spec("linux.timeOffsets", "NUL byte"))?);
        }
        Ok(plan)
    }

    /// Raw fds of the namespaces to join (kept open across the clone).
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.join.iter().map(|j| j.fd.as_raw_fd()).collect()
    }
}

/// The inode of `/proc/<pid>/ns/<name>` (to compare namespaces).
pub(crate) fn ns_inode(pid: &str, name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec(ns: Vec<(LinuxNamespaceType, Option<&str>)>) -> Spec {
        let ns = ns
            .into_iter()
            .map(|(t, p)| {
                let b = LinuxNamespaceBuilder::default().typ(t);
                match p {
                    Some(p) => b.path(p).build().unwrap(),
                    None => b.build().unwrap(),
                }
            })
            .collect::<Vec<_>>();
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(ns).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn creates_and_joins() {
        let plan = NsPlan::new(&spec(vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
        ]))
        .unwrap();
        assert_eq!(plan.unshare, libc::CLONE_NEWNS | libc::CLONE_NEWPID);
        assert_eq!(plan.join.len(), 1);
        assert_eq!(plan.join[0].nstype, libc::CLONE_NEWNET);
        assert!(!plan.new_user);
    }

    #[test]
    fn rejects_duplicates_missing_maps_and_no_mount_ns() {
        assert!(
            NsPlan::new(&spec(vec![
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Mount, None)
            ]))
            .is_err()
        );
        assert!(
            NsPlan::new(&spec(vec![
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::User, None)
            ]))
            .is_err()
        );
        assert!(NsPlan::new(&spec(vec![(LinuxNamespaceType::Pid, None)])).is_err());
        let e = NsPlan::new(&spec(vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Network, Some("/nonexistent/ns")),
        ]))
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }
}
