//! Resource limits: spec names mapped to `RLIMIT_*` before the clone, set
//! with `setrlimit` in the child.
//!
//! Raising a hard limit needs `CAP_SYS_RESOURCE`; when the runtime lacks it
//! the child's `setrlimit` fails with `EPERM`, reported as step `Rlimit`
//! naming the resource.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

use crate::sys::{self, SysResult};

/// One prepared limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    pub(crate) resource: libc::__rlimit_resource_t,
    pub(crate) soft: u64,
    pub(crate) hard: u64,
}

/// Maps an OCI rlimit type to the kernel resource number.
pub(crate) fn resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

impl Rlimit {
    /// Prepares one spec entry.
    pub(crate) fn from_spec(r: &PosixRlimit) -> Rlimit {
        Rlimit {
            resource: resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        }
    }

    /// Applies the limit to the calling process. Async-signal-safe.
    pub(crate) fn apply(&self) -> SysResult<()> {
        let lim = libc::rlimit {
            rlim_cur: self.soft,
            rlim_max: self.hard,
        };
        // SAFETY: lim is a valid rlimit.
        sys::cvt(unsafe { libc::setrlimit(self.resource, &lim) }).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::PosixRlimitBuilder;

    #[test]
    fn maps_spec_entries() {
        let r = PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(100u64)
            .hard(200u64)
            .build()
            .unwrap();
        let p = Rlimit::from_spec(&r);
        assert_eq!(p.resource, libc::RLIMIT_NOFILE);
        assert_eq!((p.soft, p.hard), (100, 200));
    }
}
