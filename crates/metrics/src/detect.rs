//! Host detection (cgroup v1 / v2 / hybrid) and cgroup locations.
//!
//! Detection looks at the **layout** under a cgroupfs root (default `/sys/fs/cgroup`), so the
//! same code reads the live host and a fixture tree in a temp dir:
//! - `ROOT/cgroup.controllers` exists → [`CgroupMode::V2`] (the root is the cgroup2 mount);
//! - otherwise every directory under `ROOT` holding `cgroup.procs` is a v1 hierarchy, named by
//!   its controllers (`cpu,cpuacct` serves both `cpu` and `cpuacct`; a symlink `cpu →
//!   cpu,cpuacct` also counts); if `ROOT/unified/cgroup.controllers` exists as well the host is
//!   [`CgroupMode::Hybrid`], else [`CgroupMode::V1`].
//!
//! A [`CgroupPaths`] is where one cgroup lives: one directory per v1 controller and/or one
//! unified directory. It is built from a path relative to the hierarchy roots
//! ([`Hierarchy::paths_for`], e.g. the `cgroupsPath` a runtime used), from a pid
//! ([`Hierarchy::paths_for_pid`], via `/proc/<pid>/cgroup`), or given directly.
//!
//! Limits: the root must show each hierarchy from its top (a cgroup-namespaced or bind-mounted
//! sub-tree is read as if it were the top); `/proc/<pid>/cgroup` paths are taken as they are,
//! i.e. relative to the reader's cgroup namespace.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::files::{is_missing, read_optional};

/// The default cgroupfs root.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The default procfs root.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// Which cgroup layout a host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// v1 controllers plus a cgroup2 mount at `ROOT/unified`.
    Hybrid,
}

/// The cgroup hierarchies found under one cgroupfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    root: PathBuf,
    mode: CgroupMode,
    controllers: BTreeMap<String, PathBuf>,
    unified: Option<PathBuf>,
}

impl Hierarchy {
    /// Detects the hierarchies under [`DEFAULT_CGROUP_ROOT`]. See [`Hierarchy::detect_at`].
    pub fn detect() -> Result<Self> {
        Self::detect_at(DEFAULT_CGROUP_ROOT)
    }

    /// Detects the hierarchies under `root` (a real cgroupfs root or a fixture tree).
    ///
    /// Errors: [`MetricsError::NoHierarchy`] when neither a cgroup2 tree nor any v1 hierarchy is
    /// found; [`MetricsError::Io`] when `root` cannot be listed.
    pub fn detect_at(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.join("cgroup.controllers").is_file() {
            return Ok(Hierarchy {
                unified: Some(root.clone()),
                root,
                mode: CgroupMode::V2,
                controllers: BTreeMap::new(),
            });
        }
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if is_missing(&e) => return Err(MetricsError::NoHierarchy { root }),
            Err(source) => return Err(MetricsError::Io { path: root, source }),
        };
        let mut controllers = BTreeMap::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == "unified" {
                continue;
            }
            let dir = root.join(&name);
            // `is_file` follows symlinks, so `cpu -> cpu,cpuacct` resolves.
            if !dir.join("cgroup.procs").is_file() {
                continue;
            }
            for controller in name.split(',') {
                if controller.is_empty() {
                    continue;
                }
                // A real directory named after the exact controller wins over a co-mount.
                let exact = controller == name;
                if exact || !controllers.contains_key(controller) {
                    controllers.insert(controller.to_string(), dir.clone());
                }
            }
        }
        let unified_dir = root.join("unified");
        let unified = unified_dir
            .join("cgroup.controllers")
            .is_file()
            .then_some(unified_dir);
        let mode = match (controllers.is_empty(), unified.is_some()) {
            (true, _) => return Err(MetricsError::NoHierarchy { root }),
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::V1,
        };
        Ok(Hierarchy {
            root,
            mode,
            controllers,
            unified,
        })
    }

    /// The cgroupfs root this hierarchy was detected under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The detected mode.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// The mount directory of a v1 controller (`memory` → `/sys/fs/cgroup/memory`).
    pub fn controller_root(&self, controller: &str) -> Option<&Path> {
        self.controllers.get(controller).map(PathBuf::as_path)
    }

    /// The v1 controllers found, by name.
    pub fn controllers(&self) -> impl Iterator<Item = &str> {
        self.controllers.keys().map(String::as_str)
    }

    /// The root of the unified (cgroup2) hierarchy, if any.
    pub fn unified_root(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The controllers enabled in the unified hierarchy (`cgroup.controllers` of its root).
    pub fn unified_controllers(&self) -> Result<Vec<String>> {
        let Some(dir) = &self.unified else {
            return Ok(Vec::new());
        };
        let text = read_optional(&dir.join("cgroup.controllers"))?.unwrap_or_default();
        Ok(text.split_ascii_whitespace().map(str::to_string).collect())
    }

    /// Locates the cgroup at `relative` (e.g. `/berth/ctr1` or `berth/ctr1`) in every hierarchy:
    /// each v1 controller's root joined with it, and the unified root joined with it.
    ///
    /// Errors: [`MetricsError::InvalidPath`] when `relative` contains `..` or is not valid UTF-8
    /// free of NUL bytes. The directories are not required to exist (a missing one reads as
    /// `None` figures).
    pub fn paths_for(&self, relative: impl AsRef<Path>) -> Result<CgroupPaths> {
        let rel = sanitize_relative(relative.as_ref())?;
        let mut paths = CgroupPaths::default();
        for (controller, dir) in &self.controllers {
            paths.v1.insert(controller.clone(), dir.join(&rel));
        }
        paths.unified = self.unified.as_ref().map(|u| u.join(&rel));
        Ok(paths)
    }

    /// Locates the cgroups of process `pid` from `PROC_ROOT/<pid>/cgroup`
    /// ([`DEFAULT_PROC_ROOT`] unless `proc_root` is given).
    ///
    /// Errors: [`MetricsError::ProcessNotFound`] when the file is missing; a
    /// [`MetricsError::Parse`] when it is malformed.
    pub fn paths_for_pid(&self, proc_root: Option<&Path>, pid: u32) -> Result<CgroupPaths> {
        let path = proc_root
            .unwrap_or(Path::new(DEFAULT_PROC_ROOT))
            .join(pid.to_string())
            .join("cgroup");
        let text = read_optional(&path)?.ok_or(MetricsError::ProcessNotFound {
            pid,
            path: path.clone(),
        })?;
        self.parse_proc_cgroup(&path, &text)
    }

    /// Maps the content of a `/proc/<pid>/cgroup` file (`path` names it in errors) onto this
    /// hierarchy. Lines are `ID:CONTROLLERS:PATH`; `0::PATH` is the unified hierarchy; named
    /// hierarchies (`name=systemd`) and controllers not mounted here are ignored.
    pub fn parse_proc_cgroup(&self, path: &Path, text: &str) -> Result<CgroupPaths> {
        let mut paths = CgroupPaths::default();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(cg_path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(MetricsError::parse(
                    path,
                    i + 1,
                    "expected ID:CONTROLLERS:PATH",
                ));
            };
            if id.parse::<u32>().is_err() {
                return Err(MetricsError::parse(
                    path,
                    i + 1,
                    "hierarchy id is not a number",
                ));
            }
            let rel = sanitize_relative(Path::new(cg_path))
                .map_err(|_| MetricsError::parse(path, i + 1, "unusable cgroup path"))?;
            if id == "0" && ctrls.is_empty() {
                if let Some(u) = &self.unified {
                    paths.unified = Some(u.join(&rel));
                }
                continue;
            }
            for controller in ctrls.split(',') {
                if controller.starts_with("name=") {
                    continue;
                }
                if let Some(dir) = self.controllers.get(controller) {
                    paths.v1.insert(controller.to_string(), dir.join(&rel));
                }
            }
        }
        Ok(paths)
    }
}

/// Turns `/a/b` or `a/b` into the relative `a/b`, rejecting `..` (which could leave the root).
fn sanitize_relative(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(MetricsError::InvalidPath {
                    path: p.to_path_buf(),
                    reason: "must not contain `..`",
                });
            }
        }
    }
    Ok(out)
}

/// Where one cgroup lives: a directory per v1 controller and/or a unified directory.
///
/// A `CgroupPaths` with any v1 controller is read as v1 ([`crate::Metrics::V1`]), using the
/// unified directory (hybrid hosts) for PSI and, when the v1 hierarchy has no `hugetlb`, for
/// hugetlb. One with only a unified directory is read as v2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPaths {
    /// Controller name → cgroup directory in that controller's v1 hierarchy.
    pub v1: BTreeMap<String, PathBuf>,
    /// Cgroup directory in the unified hierarchy.
    pub unified: Option<PathBuf>,
}

impl CgroupPaths {
    /// A cgroup v2 cgroup at `dir`.
    pub fn v2(dir: impl Into<PathBuf>) -> Self {
        CgroupPaths {
            v1: BTreeMap::new(),
            unified: Some(dir.into()),
        }
    }

    /// A cgroup v1 cgroup given as `(controller, directory)` pairs.
    pub fn v1<I, S, P>(dirs: I) -> Self
    where
        I: IntoIterator<Item = (S, P)>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        CgroupPaths {
            v1: dirs
                .into_iter()
                .map(|(s, p)| (s.into(), p.into()))
                .collect(),
            unified: None,
        }
    }

    /// Adds (or replaces) the unified directory, for hybrid hosts.
    pub fn with_unified(mut self, dir: impl Into<PathBuf>) -> Self {
        self.unified = Some(dir.into());
        self
    }

    /// The directory of a v1 controller.
    pub fn controller(&self, name: &str) -> Option<&Path> {
        self.v1.get(name).map(PathBuf::as_path)
    }

    /// The unified directory.
    pub fn unified(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// True when the cgroup is read as v1.
    pub fn is_v1(&self) -> bool {
        !self.v1.is_empty()
    }

    /// True when no directory is known at all.
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.unified.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn detects_v1_hybrid_and_v2_layouts() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for c in ["cpu,cpuacct", "memory", "pids", "systemd"] {
            touch(&r.join(c).join("cgroup.procs"));
        }
        std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpu")).unwrap();
        std::fs::create_dir(r.join("not-a-hierarchy")).unwrap();
        let h = Hierarchy::detect_at(r).unwrap();
        assert_eq!(h.mode(), CgroupMode::V1);
        assert_eq!(h.controller_root("cpu"), Some(r.join("cpu").as_path()));
        assert_eq!(
            h.controller_root("cpuacct"),
            Some(r.join("cpu,cpuacct").as_path())
        );
        assert!(h.controller_root("not-a-hierarchy").is_none());

        touch(&r.join("unified/cgroup.controllers"));
        std::fs::write(r.join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        let h = Hierarchy::detect_at(r).unwrap();
        assert_eq!(h.mode(), CgroupMode::Hybrid);
        assert_eq!(
            h.unified_controllers().unwrap(),
            vec!["hugetlb".to_string()]
        );

        let v2 = tempfile::tempdir().unwrap();
        touch(&v2.path().join("cgroup.controllers"));
        let h = Hierarchy::detect_at(v2.path()).unwrap();
        assert_eq!(h.mode(), CgroupMode::V2);
        assert_eq!(h.unified_root(), Some(v2.path()));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Hierarchy::detect_at(empty.path()),
            Err(MetricsError::NoHierarchy { .. })
        ));
        assert!(matches!(
            Hierarchy::detect_at(empty.path().join("missing")),
            Err(MetricsError::NoHierarchy { .. })
        ));
    }

    #[test]
    fn relative_paths_and_proc_cgroup() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for c in ["memory", "pids"] {
            touch(&r.join(c).join("cgroup.procs"));
        }
        touch(&r.join("unified/cgroup.controllers"));
        let h = Hierarchy::detect_at(r).unwrap();
        let p = h.paths_for("/berth/c1").unwrap();
        assert_eq!(
            p.controller("memory"),
            Some(r.join("memory/berth/c1").as_path())
        );
        assert_eq!(p.unified(), Some(r.join("unified/berth/c1").as_path()));
        assert!(h.paths_for("/berth/../../etc").is_err());

        let text = "9:name=systemd:/x\n8:pids:/a/b\n4:memory:/a/b\n2:cpuacct:/a\n0::/a/b\n";
        let p = h
            .parse_proc_cgroup(Path::new("/proc/1/cgroup"), text)
            .unwrap();
        assert_eq!(p.controller("pids"), Some(r.join("pids/a/b").as_path()));
        assert_eq!(p.controller("memory"), Some(r.join("memory/a/b").as_path()));
        assert!(p.controller("cpuacct").is_none(), "not mounted here");
        assert!(p.controller("name=systemd").is_none());
        assert_eq!(p.unified(), Some(r.join("unified/a/b").as_path()));
        assert!(h.parse_proc_cgroup(Path::new("/p"), "garbage\n").is_err());
        assert!(
            h.parse_proc_cgroup(Path::new("/p"), "x:memory:/a\n")
                .is_err()
        );
        assert!(
            h.parse_proc_cgroup(Path::new("/p"), "4:memory:/../a\n")
                .is_err()
        );
    }
}
