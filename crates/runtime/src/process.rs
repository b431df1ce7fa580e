//! The container process: everything `execve` needs, prepared before the clone.
//!
//! [`ProcessPlan::new`] turns an OCI [`Process`] into C strings, pointer
//! arrays, bitmasks and a compiled seccomp program, so the child only has to
//! make system calls. The executable is looked up along the process's
//! `PATH` at exec time (inside the container's root): the candidate paths
//! are prepared here and tried in order, like `execvpe`.

use std::ffi::{CString, c_char};
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::capabilities::CapPlan;
use crate::error::{Error, Result};
use crate::rlimits::Rlimit;
use crate::seccomp::SeccompProgram;
use crate::sys;

/// The default `PATH` when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A prepared process.
#[derive(Debug)]
pub(crate) struct ProcessPlan {
    exe_candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    /// The first argument, for error messages.
    pub(crate) arg0: String,
    pub(crate) cwd: CString,
    pub(crate) cwd_display: String,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) additional_gids: Vec<libc::gid_t>,
    pub(crate) umask: Option<libc::mode_t>,
    pub(crate) caps: Option<CapPlan>,
    pub(crate) no_new_privileges: bool,
    pub(crate) rlimits: Vec<Rlimit>,
    pub(crate) seccomp: Option<SeccompProgram>,
    /// `(path under /proc/self, contents)` of an LSM exec label to write.
    pub(crate) lsm_label: Option<(CString, CString)>,
    pub(crate) oom_score_adj: Option<CString>,
    pub(crate) terminal: bool,
    /// `process.consoleSize` as (rows, columns).
    pub(crate) console_size: Option<(u16, u16)>,
    /// `process.ioPriority` as an `ioprio_set` value.
    pub(crate) io_priority: Option<libc::c_int>,
    /// `linux.personality` as a `personality(2)` persona (set by the caller).
    pub(crate) personality: Option<libc::c_ulong>,
    /// `process.scheduler` as a `sched_setattr` argument.
    pub(crate) scheduler: Option<SchedAttr>,
}

/// The kernel's `struct sched_attr` (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn sched_attr(s: &oci_spec::runtime::Scheduler) -> SchedAttr {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    }
}

fn cstring(field: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::spec(field, "contains a NUL byte"))
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

impl ProcessPlan {
    /// Prepares `process` (with the container's seccomp profile, if any).
    ///
    /// Errors: [`Error::InvalidSpec`] for missing args, relative cwd, NUL
    /// bytes or unknown capabilities; [`Error::Unsupported`] for an AppArmor
    /// profile or SELinux label on a host without that LSM.
    pub(crate) fn new(process: &Process, seccomp: Option<&LinuxSeccomp>) -> Result<ProcessPlan> {
        let args = process.args().as_deref().unwrap_or(&[]);
        let Some(arg0) = args.first() else {
            return Err(Error::spec("process.args", "must name a program"));
        };
        let argv = args
            .iter()
            .map(|a| cstring("process.args", a))
            .collect::<Result<Vec<_>>>()?;
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let envp = env
            .iter()
            .map(|e| cstring("process.env", e))
            .collect::<Result<Vec<_>>>()?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());

        let exe_candidates = if arg0.contains('/') {
            vec![cstring("process.args[0]", arg0)?]
        } else {
            let path = env
                .iter()
                .rev()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            let mut v = Vec::new();
            for dir in path.split(':') {
                let dir = if dir.is_empty() { "." } else { dir };
                v.push(cstring("process.env PATH", &format!("{dir}/{arg0}"))?);
            }
            v
        };

        let cwd = process.cwd();
        if !cwd.is_absolute() {
            return Err(Error::spec(
                "process.cwd",
                format!("{} is not absolute", cwd.display()),
            ));
        }
        let cwd_display = cwd.display().to_string();

        let user = process.user();
        let caps = match process.capabilities() {
            Some(c) => Some(CapPlan::new(c, crate::capabilities::last_cap())?),
            None => None,
        };
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(Rlimit::from_spec)
            .collect();
        let seccomp = match seccomp {
            Some(p) => Some(SeccompProgram::compile(p)?),
            None => None,
        };

        let lsm_label = if let Some(profile) = process
            .apparmor_profile()
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            if !apparmor_enabled() {
                return Err(Error::Unsupported {
                    feature: format!("process.apparmorProfile {profile:?}"),
                    reason: "AppArmor is not enabled on this host".into(),
                });
            }
            Some((
                cstring("process.apparmorProfile", "self/attr/apparmor/exec")?,
                cstring("process.apparmorProfile", &format!("exec {profile}"))?,
            ))
        } else if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
            if !selinux_enabled() {
                return Err(Error::Unsupported {
                    feature: format!("process.selinuxLabel {label:?}"),
                    reason: "SELinux is not enabled on this host".into(),
                });
            }
            Some((
                cstring("process.selinuxLabel", "self/attr/exec")?,
                cstring("process.selinuxLabel", label)?,
            ))
        } else {
            None
        };

        let io_priority = match process.io_priority() {
            Some(p) => {
                use oci_spec::runtime::IOPriorityClass;
                let class = match p.class() {
                    IOPriorityClass::IoprioClassRt => 1,
                    IOPriorityClass::IoprioClassBe => 2,
                    IOPriorityClass::IoprioClassIdle => 3,
                };
                let prio = p.priority();
                if !(0..=7).contains(&prio) {
                    return Err(Error::spec(
                        "process.ioPriority.priority",
                        format!("{prio} is not in 0..=7"),
                    ));
                }
                Some((class << 13) | prio as libc::c_int)
            }
            None => None,
        };
        let oom_score_adj = match process.oom_score_adj() {
            Some(v) => {
                if !(-1000..=1000).contains(&v) {
                    return Err(Error::spec(
                        "process.oomScoreAdj",
                        format!("{v} is out of range"),
                    ));
                }
                Some(cstring("process.oomScoreAdj", &v.to_string())?)
            }
            None => None,
        };

        Ok(ProcessPlan {
            exe_candidates,
            arg0: arg0.clone(),
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd: cstring("process.cwd", &cwd_display)?,
            cwd_display,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            caps,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits,
            seccomp,
            lsm_label,
            oom_score_adj,
            terminal: process.terminal().unwrap_or(false),
            console_size: process.console_size().as_ref().map(|b| {
                (
                    u16::try_from(b.height()).unwrap_or(u16::MAX),
                    u16::try_from(b.width()).unwrap_or(u16::MAX),
                )
            }),
            io_priority,
            personality: None,
            scheduler: process.scheduler().as_ref().map(sched_attr),
        })
    }

    /// Sets the persona from `linux.personality`.
    pub(crate) fn set_personality(&mut self, p: Option<&oci_spec::runtime::LinuxPersonality>) {
        use oci_spec::runtime::LinuxPersonalityDomain;
        self.personality = p.map(|p| match p.domain() {
            LinuxPersonalityDomain::PerLinux => 0x0000,
            LinuxPersonalityDomain::PerLinux32 => 0x0008,
        });
    }

    /// Applies scheduler, ioPriority and personality. Async-signal-safe.
    pub(crate) fn apply_scheduling(&self) -> std::result::Result<(), (crate::error::Step, i32)> {
        use crate::error::Step;
        if let Some(v) = self.io_priority {
            // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value).
            let r = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, v) };
            sys::cvt_long(r).map_err(|e| (Step::IoPriority, e))?;
        }
        if let Some(attr) = &self.scheduler {
            // SAFETY: sched_setattr(0 = self, attr, 0) with a valid struct.
            let r =
                unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) };
            sys::cvt_long(r).map_err(|e| (Step::Scheduler, e))?;
        }
        if let Some(p) = self.personality {
            // SAFETY: personality with a plain persona value.
            if unsafe { libc::personality(p) } == -1 {
                return Err((Step::Personality, sys::errno()));
            }
        }
        Ok(())
    }

    /// Tries each candidate executable; returns only on failure, with the
    /// most telling errno (`EACCES` beats `ENOENT`, as in `execvp`).
    /// Async-signal-safe.
    pub(crate) fn exec(&self) -> i32 {
        let mut err = libc::ENOENT;
        for path in &self.exe_candidates {
            // SAFETY: path, argv and envp are NUL-terminated strings and
            // NULL-terminated pointer arrays that live as long as `self`.
            unsafe {
                libc::execve(
                    path.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.envp_ptrs.as_ptr(),
                );
            }
            let e = sys::errno();
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => err = libc::EACCES,
                _ => return e,
            }
        }
        err
    }

    /// Sets supplementary groups, gid and uid (keeping capabilities across
    /// the switch). Async-signal-safe. Returns the step that failed.
    pub(crate) fn switch_user(&self) -> std::result::Result<(), (crate::error::Step, i32)> {
        use crate::error::Step;
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err((Step::KeepCaps, sys::errno()));
        }
        if let Err(e) = sys::setgroups(&self.additional_gids) {
            // In a user namespace with setgroups denied, an empty list is fine.
            if !(e == libc::EPERM && self.additional_gids.is_empty()) {
                return Err((Step::SetGroups, e));
            }
        }
        sys::setresgid(self.gid).map_err(|e| (Step::SetGid, e))?;
        sys::setresuid(self.uid).map_err(|e| (Step::SetUid, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    #[test]
    fn path_lookup_candidates_follow_env_path() {
        let p = ProcessBuilder::default()
            .args(vec!["sh".to_string(), "-c".to_string(), "true".to_string()])
            .env(vec!["PATH=/bin:/usr/bin".to_string()])
            .cwd("/")
            .build()
            .unwrap();
        let plan = ProcessPlan::new(&p, None).unwrap();
        assert_eq!(
            plan.exe_candidates,
            vec![c"/bin/sh".to_owned(), c"/usr/bin/sh".to_owned()]
        );
        assert_eq!(plan.argv_ptrs.len(), 4);
        assert!(plan.argv_ptrs[3].is_null());
    }

    #[test]
    fn rejects_relative_cwd_and_empty_args() {
        let p = ProcessBuilder::default()
            .args(vec!["/bin/true".to_string()])
            .cwd("relative")
            .build()
            .unwrap();
        assert_eq!(
            ProcessPlan::new(&p, None).unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
        let p = ProcessBuilder::default()
            .args(Vec::<String>::new())
            .cwd("/")
            .build()
            .unwrap();
        assert!(ProcessPlan::new(&p, None).is_err());
    }
}
