//! `features`: what this runtime implements, as the runtime-spec "features" JSON
//! (`features.md` of the runtime spec, the document `runc features` prints).
//!
//! The lists name what berth-runtime implements; AppArmor and SELinux are reported enabled only
//! when the host has them, since a label can only be applied where the LSM is active.

use std::path::Path;

use serde_json::{Value, json};

/// The oldest runtime-spec version accepted.
pub const OCI_VERSION_MIN: &str = "1.0.0";
/// The newest runtime-spec version implemented (the one berth-runtime reports in states).
pub const OCI_VERSION_MAX: &str = berth_runtime::state::OCI_VERSION;

/// Mount options the runtime recognises (flags and propagation; others go to the filesystem).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
];

/// Namespaces that can be created or joined.
const NAMESPACES: &[&str] = &[
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

/// Seccomp actions, operators and architectures of the libseccomp binding.
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];
const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];
const SECCOMP_ARCHS: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];

/// The capabilities this kernel knows, by name (`CAP_CHOWN` ...), up to `cap_last_cap`.
fn known_capabilities() -> Vec<String> {
    let names = &berth::oci::validate::CAPABILITIES;
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(names.len() - 1);
    names
        .iter()
        .take(last + 1)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Whether AppArmor is enabled on this host.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

/// Whether SELinux is enabled on this host.
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// The features document.
pub fn features() -> Value {
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": [
            "prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"
        ],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": known_capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false
            },
            "seccomp": {
                "enabled": cfg!(target_os = "linux"),
                "actions": SECCOMP_ACTIONS,
                "operators": SECCOMP_OPERATORS,
                "archs": SECCOMP_ARCHS
            },
            "apparmor": { "enabled": apparmor_enabled() },
            "selinux": { "enabled": selinux_enabled() },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "io.github.berth.runtime.version": env!("CARGO_PKG_VERSION")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_runtime_spec_features() {
        let f: oci_spec::runtime::Features = serde_json::from_value(features()).unwrap();
        assert_eq!(f.oci_version_min(), OCI_VERSION_MIN);
        let linux = f.linux().as_ref().unwrap();
        assert!(linux.namespaces().as_ref().unwrap().len() >= 7);
        let caps = linux.capabilities().as_ref().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    }
}
