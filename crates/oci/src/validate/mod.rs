//! Validation of OCI runtime specs (`config.json`), reporting every problem at once.
//!
//! `oci-spec` decodes a spec without checking it, so this module adds the checks a runtime needs
//! before it touches the system. [`validate`] inspects a decoded [`Spec`] and returns
//! [`Error::InvalidSpec`] listing *all* problems found, each prefixed with the JSON path it is
//! about (`process.cwd: …`), so a user fixes a config in one round.
//!
//! Capability and rlimit names are enums in `oci-spec`, and its decoder is lenient (it accepts
//! `sys_admin` for `CAP_SYS_ADMIN`) yet fails the whole document on the first unknown name.
//! [`validate_json`] therefore checks names on the raw JSON first (exact `CAP_*` / `RLIMIT_*`
//! spellings, as runc and the spec use), sets the bad entries aside, decodes the rest and runs
//! [`validate`], returning every problem of both passes together.
//!
//! What is checked:
//! - `ociVersion` is SemVer 2.0.0 with major version 1;
//! - `root.path` is present and non-empty;
//! - `process` (when present): `args` non-empty with a non-empty first entry, `cwd` absolute,
//!   `env` entries `KEY=value` with a non-empty key, capability and rlimit names known
//!   ([`CAPABILITIES`], [`RLIMITS`]), rlimit types unique and soft ≤ hard, `oomScoreAdj`
//!   within -1000..=1000;
//! - `mounts[].destination` absolute, and mount id-mappings sane;
//! - `hooks.*[].path` absolute and `timeout` > 0;
//! - `linux`: namespace types unique and their paths absolute; uid/gid mappings with size > 0,
//!   no overflow, no overlapping ranges, at most 340 entries, and given only with a user
//!   namespace (runc's rule; a new user namespace without mappings is left to the runtime's
//!   defaults, as crun does for rootless specs); `hostname`/`domainname` only with a UTS namespace; sysctl keys
//!   non-empty without whitespace and namespaced in a namespace the spec creates or joins
//!   (runc's rule: IPC sysctls need `ipc`, `net.*` needs `network`, `kernel.hostname` and
//!   `kernel.domainname` need `uts`, anything else would change the host); a known
//!   `rootfsPropagation`; device, masked and read-only paths absolute; seccomp has a default
//!   action and every syscall rule names non-empty syscalls.

mod checks;
#[cfg(test)]
mod tests;

use oci_spec::runtime::Spec;
use serde_json::Value;

use crate::error::{Error, Result};
use checks::problems;

/// Capability names the kernel defines, in kernel numbering (`CAP_CHOWN` is 0), up to
/// `CAP_CHECKPOINT_RESTORE` (40, Linux 5.9), the newest capability.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Resource-limit names of `getrlimit(2)` that a spec may set.
pub const RLIMITS: [&str; 16] = [
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// The kernel's limit on uid_map / gid_map entries (since Linux 4.15).
pub const MAX_ID_MAPPINGS: usize = 340;

/// The capability sets of `process.capabilities`.
const CAPABILITY_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// The kernel number of a capability name (`CAP_SYS_ADMIN` → 21), or `None` if unknown.
pub fn capability_number(name: &str) -> Option<u8> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .and_then(|n| u8::try_from(n).ok())
}

/// Validates a decoded runtime spec.
///
/// # Errors
/// [`Error::InvalidSpec`] listing every problem found (see the module docs for the checks).
pub fn validate(spec: &Spec) -> Result<()> {
    let problems = problems(spec);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec { problems })
    }
}

/// Checks names on the raw JSON, decodes it and validates the result, returning the spec when
/// there is no problem.
///
/// # Errors
/// [`Error::Json`] when `bytes` is not JSON at all; otherwise [`Error::InvalidSpec`] listing the
/// unknown or misspelt capability and rlimit names, a missing seccomp default action, a
/// document that does not decode as a spec, and every [`validate`] problem, together.
pub fn validate_json(bytes: &[u8]) -> Result<Spec> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: "runtime spec".to_owned(),
        source,
    })?;
    let mut problems = sanitize_names(&mut value);
    match serde_json::from_value::<Spec>(value) {
        Ok(spec) => {
            problems.extend(checks::problems(&spec));
            if problems.is_empty() {
                Ok(spec)
            } else {
                Err(Error::InvalidSpec { problems })
            }
        }
        Err(e) => {
            problems.push(format!("spec does not decode: {e}"));
            Err(Error::InvalidSpec { problems })
        }
    }
}

/// Reports and removes capability and rlimit entries with unknown names, and stands in a
/// default action for a seccomp section lacking one, so the rest can still be decoded.
fn sanitize_names(value: &mut Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in CAPABILITY_SETS {
            let Some(list) = caps.get_mut(set).and_then(Value::as_array_mut) else {
                continue;
            };
            let mut i = 0;
            list.retain(|entry| {
                let known = entry.as_str().is_some_and(|s| CAPABILITIES.contains(&s));
                if !known {
                    problems.push(format!(
                        "process.capabilities.{set}[{i}]: unknown capability {entry} \
                         (expected a CAP_* name up to CAP_CHECKPOINT_RESTORE)"
                    ));
                }
                i += 1;
                known
            });
        }
    }
    if let Some(list) = value
        .pointer_mut("/process/rlimits")
        .and_then(Value::as_array_mut)
    {
        let mut i = 0;
        list.retain(|entry| {
            let typ = entry.get("type");
            let known = typ
                .and_then(Value::as_str)
                .is_some_and(|s| RLIMITS.contains(&s));
            if !known {
                let shown = typ.map_or_else(|| "none".to_owned(), Value::to_string);
                problems.push(format!(
                    "process.rlimits[{i}].type: unknown rlimit {shown} (expected an RLIMIT_* name)"
                ));
            }
            i += 1;
            known
        });
    }
    if let Some(seccomp) = value
        .pointer_mut("/linux/seccomp")
        .and_then(Value::as_object_mut)
        && !seccomp.contains_key("defaultAction")
    {
        problems.push("linux.seccomp.defaultAction: missing".to_owned());
        seccomp.insert(
            "defaultAction".to_owned(),
            Value::String("SCMP_ACT_ALLOW".to_owned()),
        );
    }
    problems
}
