//! Capabilities: the spec's five sets turned into bitmasks before the clone,
//! applied with raw `capset`/`prctl` in the child.
//!
//! The bounding set cannot be set as a whole; each capability outside the
//! spec's bounding set is dropped one at a time (`PR_CAPBSET_DROP`), which
//! needs `CAP_SETPCAP` and so happens before the uid switch. Capabilities the
//! running kernel does not know (above `cap_last_cap`) are rejected when
//! asked for and never dropped.

use std::str::FromStr;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};
use crate::sys::{self, SysResult};

/// Prepared capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapPlan {
    /// Bounding-set capabilities to drop (numbers up to `cap_last_cap`).
    pub(crate) drop_bounding: Vec<u32>,
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
    /// Ambient capabilities to raise.
    pub(crate) ambient: Vec<u32>,
}

/// The highest capability number the kernel knows.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn mask(set: &Option<Capabilities>, which: &str, last: u32) -> Result<u64> {
    let mut m = 0u64;
    for cap in set.iter().flatten() {
        let name = format!("CAP_{cap}");
        let c = caps::Capability::from_str(&name).map_err(|_| {
            Error::spec(
                format!("process.capabilities.{which}"),
                format!("unknown capability {name}"),
            )
        })?;
        let n = u32::from(c.index());
        if n > last {
            return Err(Error::Unsupported {
                feature: name,
                reason: format!("the kernel's last capability is {last}"),
            });
        }
        m |= 1u64 << n;
    }
    Ok(m)
}

impl CapPlan {
    /// Prepares the spec's capabilities for a kernel whose last capability is `last`.
    ///
    /// The kernel raises an ambient capability only when it is both permitted and
    /// inheritable. Ambient capabilities the spec lists without that (`runc spec`'s default
    /// lists three with no inheritable set) are left out with a warning, as runc does, instead
    /// of failing the container.
    pub(crate) fn new(spec: &LinuxCapabilities, last: u32) -> Result<CapPlan> {
        let bounding = mask(spec.bounding(), "bounding", last)?;
        let permitted = mask(spec.permitted(), "permitted", last)?;
        let inheritable = mask(spec.inheritable(), "inheritable", last)?;
        let ambient_mask = mask(spec.ambient(), "ambient", last)?;
        let raisable = ambient_mask & permitted & inheritable;
        let skipped = ambient_mask & !raisable;
        if skipped != 0 {
            let names: Vec<String> = (0..=last)
                .filter(|n| skipped & (1u64 << n) != 0)
                .map(|n| {
                    caps::all()
                        .into_iter()
                        .find(|c| u32::from(c.index()) == n)
                        .map_or_else(|| n.to_string(), |c| c.to_string())
                })
                .collect();
            tracing::warn!(
                capabilities = %names.join(","),
                "ambient capabilities not in both the permitted and inheritable sets cannot be \
                 raised; left out"
            );
        }
        let plan = CapPlan {
            drop_bounding: (0..=last).filter(|n| bounding & (1u64 << n) == 0).collect(),
            effective: mask(spec.effective(), "effective", last)?,
            permitted,
            inheritable,
            ambient: (0..=last).filter(|n| raisable & (1u64 << n) != 0).collect(),
        };
        Ok(plan)
    }

    /// Drops the bounding set. Async-signal-safe. Returns the failing cap on error.
    pub(crate) fn drop_bounding(&self) -> std::result::Result<(), (u32, i32)> {
        for &cap in &self.drop_bounding {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err((cap, sys::errno()));
            }
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable. Async-signal-safe.
    pub(crate) fn set(&self) -> SysResult<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let lo = |m: u64| (m & 0xffff_ffff) as u32;
        let hi = |m: u64| (m >> 32) as u32;
        let data = [
            Data {
                effective: lo(self.effective),
                permitted: lo(self.permitted),
                inheritable: lo(self.inheritable),
            },
            Data {
                effective: hi(self.effective),
                permitted: hi(self.permitted),
                inheritable: hi(self.inheritable),
            },
        ];
        // SAFETY: header and data are valid v3 capset structures.
        let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
        sys::cvt_long(r).map(|_| ())
    }

    /// Raises the ambient set. Async-signal-safe. Returns the failing cap on error.
    pub(crate) fn raise_ambient(&self) -> std::result::Result<(), (u32, i32)> {
        for &cap in &self.ambient {
            // SAFETY: prctl with integer arguments.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err((cap, sys::errno()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, LinuxCapabilitiesBuilder};

    #[test]
    fn masks_and_drop_list_follow_the_spec() {
        let set: Capabilities = [Capability::Chown, Capability::NetBindService]
            .into_iter()
            .collect();
        let spec = LinuxCapabilitiesBuilder::default()
            .bounding(set.clone())
            .effective(set.clone())
            .permitted(set.clone())
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build()
            .unwrap();
        let plan = CapPlan::new(&spec, 40).unwrap();
        let expected = (1u64 << 0) | (1u64 << 10);
        assert_eq!(plan.effective, expected);
        assert_eq!(plan.permitted, expected);
        assert_eq!(plan.inheritable, 0);
        assert!(!plan.drop_bounding.contains(&0));
        assert!(!plan.drop_bounding.contains(&10));
        assert!(plan.drop_bounding.contains(&21));
        assert_eq!(plan.drop_bounding.len(), 41 - 2);
    }

    #[test]
    fn ambient_needs_permitted_and_inheritable() {
        let caps = |c: &[Capability]| c.iter().copied().collect::<Capabilities>();
        // runc spec's default: ambient without inheritable.
        let spec = LinuxCapabilitiesBuilder::default()
            .bounding(caps(&[Capability::Kill, Capability::AuditWrite]))
            .permitted(caps(&[Capability::Kill, Capability::AuditWrite]))
            .inheritable(caps(&[Capability::Kill]))
            .ambient(caps(&[
                Capability::Kill,
                Capability::AuditWrite,
                Capability::Chown,
            ]))
            .build()
            .unwrap();
        let plan = CapPlan::new(&spec, 40).unwrap();
        assert_eq!(plan.ambient, vec![5], "only CAP_KILL is raisable");
        assert_eq!(plan.inheritable, 1u64 << 5);
    }

    #[test]
    fn capability_beyond_kernel_is_unsupported() {
        let set: Capabilities = [Capability::CheckpointRestore].into_iter().collect();
        let spec = LinuxCapabilitiesBuilder::default()
            .effective(set)
            .build()
            .unwrap();
        let e = CapPlan::new(&spec, 37).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
    }
}
