//! Seccomp: the spec's profile compiled to BPF in the runtime, loaded raw in the child.
//!
//! libseccomp's filter context is neither `Send` nor async-signal-safe, so it
//! is built and exported to BPF here, before the clone. The child then only
//! calls `seccomp(SECCOMP_SET_MODE_FILTER)` with the prepared program.
//!
//! Unknown syscall names are skipped (as runc does): a profile written for a
//! newer kernel must still load on this one.

use oci_spec::runtime::LinuxSeccomp;

#[cfg(not(feature = "seccomp"))]
use crate::error::Error;
use crate::error::Result;
use crate::sys::{self, SysResult};

/// A compiled filter ready to load in the child.
#[derive(Debug)]
pub(crate) struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

#[cfg(feature = "seccomp")]
mod compile {
    use std::io::{Read, Seek};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use libseccomp::{
        ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    };
    use oci_spec::runtime::{
        Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
    };

    use super::SeccompProgram;
    use crate::error::{Error, Result};

    fn err(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Seccomp {
            reason: format!("{what}: {e}"),
        }
    }

    fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
        Ok(match a {
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                ScmpAction::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
            LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
            LinuxSeccompAction::ScmpActErrno => {
                ScmpAction::Errno(errno_ret.map_or(libc::EPERM, |e| e as i32))
            }
            LinuxSeccompAction::ScmpActTrace => {
                ScmpAction::Trace(errno_ret.map_or(libc::EPERM as u16, |e| e as u16))
            }
            LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
            LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
            LinuxSeccompAction::ScmpActNotify => {
                return Err(Error::Unsupported {
                    feature: "seccomp SCMP_ACT_NOTIFY".into(),
                    reason: "seccomp notify listeners are not implemented".into(),
                });
            }
        })
    }

    fn arch(a: Arch) -> ScmpArch {
        match a {
            Arch::ScmpArchNative => ScmpArch::Native,
            Arch::ScmpArchX86 => ScmpArch::X86,
            Arch::ScmpArchX86_64 => ScmpArch::X8664,
            Arch::ScmpArchX32 => ScmpArch::X32,
            Arch::ScmpArchArm => ScmpArch::Arm,
            Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
            Arch::ScmpArchMips => ScmpArch::Mips,
            Arch::ScmpArchMips64 => ScmpArch::Mips64,
            Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
            Arch::ScmpArchMipsel => ScmpArch::Mipsel,
            Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
            Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
            Arch::ScmpArchPpc => ScmpArch::Ppc,
            Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
            Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
            Arch::ScmpArchS390 => ScmpArch::S390,
            Arch::ScmpArchS390x => ScmpArch::S390X,
            Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
            _ => ScmpArch::Native,
        }
    }

    fn op(o: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
        match o {
            LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
            LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
            LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
            LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
            LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
            LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0))
            }
        }
    }

    pub(super) fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram> {
        let default = action(profile.default_action(), profile.default_errno_ret())?;
        let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("new filter", e))?;
        // The runtime sets no_new_privs itself when the spec asks for it.
        ctx.set_ctl_nnp(false)
            .map_err(|e| err("disable NNP control", e))?;
        for a in profile.architectures().iter().flatten() {
            let a = arch(*a);
            if a != ScmpArch::Native {
                ctx.add_arch(a).map_err(|e| err("add arch", e))?;
            }
        }
        for rule in profile.syscalls().iter().flatten() {
            let act = action(rule.action(), rule.errno_ret())?;
            if act == default {
                continue;
            }
            for name in rule.names() {
                let Ok(sc) = ScmpSyscall::from_name(name) else {
                    tracing::debug!(syscall = %name, "unknown syscall in seccomp profile, skipped");
                    continue;
                };
                let args = rule.args().as_deref().unwrap_or(&[]);
                if args.is_empty() {
                    ctx.add_rule(act, sc)
                        .map_err(|e| err(&format!("add rule for {name}"), e))?;
                    continue;
                }
                // Conditions on the same argument cannot be ANDed by
                // libseccomp: add them as separate rules (OR), as runc does.
                let mut same_arg = true;
                for w in args.windows(2) {
                    if w[0].index() != w[1].index() {
                        same_arg = false;
                    }
                }
                let cmps: Vec<ScmpArgCompare> = args
                    .iter()
                    .map(|a| {
                        ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
                    })
                    .collect();
                if same_arg && cmps.len() > 1 {
                    for c in cmps {
                        ctx.add_rule_conditional(act, sc, &[c])
                            .map_err(|e| err(&format!("add rule for {name}"), e))?;
                    }
                } else {
                    ctx.add_rule_conditional(act, sc, &cmps)
                        .map_err(|e| err(&format!("add rule for {name}"), e))?;
                }
            }
        }
        let mut flags: libc::c_ulong = 0;
        for f in profile.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2, // SECCOMP_FILTER_FLAG_LOG
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4, // SPEC_ALLOW
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1, // TSYNC
                #[allow(unreachable_patterns)]
                _ => 0,
            };
        }

        // Export to an anonymous memory file (libseccomp 2.5 has no export to memory).
        // SAFETY: memfd_create with a static name; we own the returned fd.
        let raw = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(err("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        ctx.export_bpf(fd.as_fd())
            .map_err(|e| err("export BPF", e))?;
        let mut file = std::fs::File::from(fd);
        file.rewind().map_err(|e| err("rewind BPF", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| err("read BPF", e))?;
        let insn = size_of::<libc::sock_filter>();
        if bytes.is_empty() || bytes.len() % insn != 0 {
            return Err(err("export BPF", "unexpected program size"));
        }
        let filter = bytes
            .chunks_exact(insn)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Ok(SeccompProgram { filter, flags })
    }
}

impl SeccompProgram {
    /// Compiles the spec's profile.
    ///
    /// Errors: [`Error::Seccomp`] when libseccomp rejects a rule,
    /// [`Error::Unsupported`] for notify actions or when built without the
    /// `seccomp` feature.
    pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram> {
        #[cfg(feature = "seccomp")]
        {
            compile::compile(profile)
        }
        #[cfg(not(feature = "seccomp"))]
        {
            let _ = profile;
            Err(Error::Unsupported {
                feature: "linux.seccomp".into(),
                reason: "berth-runtime was built without the `seccomp` feature".into(),
            })
        }
    }

    /// Number of BPF instructions.
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.filter.len()
    }

    /// Loads the program into the calling thread. Async-signal-safe.
    pub(crate) fn load(&self) -> SysResult<()> {
        let prog = libc::sock_fprog {
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points at our filter vector, alive for the call; the
        // kernel copies the program.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        sys::cvt_long(r).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};

    #[test]
    fn compiles_a_profile_with_unknown_names_skipped() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec!["mkdir".to_string(), "no_such_syscall_xyz".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(1u32)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let prog = SeccompProgram::compile(&profile).unwrap();
        assert!(prog.len() > 3);
    }
}
