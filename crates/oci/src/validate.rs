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
//!   ([`CAPABILITIES`], [`RLIMITS`]), rlimit types unique and soft ≤ hard;
//! - `mounts[].destination` absolute, and mount id-mappings sane;
//! - `hooks.*[].path` absolute and `timeout` > 0;
//! - `linux`: namespace types unique and their paths absolute; uid/gid mappings with size > 0,
//!   no overflow, no overlapping ranges, at most 340 entries, and present exactly when a new
//!   user namespace is created; `hostname`/`domainname` only with a UTS namespace; sysctl keys
//!   non-empty without whitespace; device, masked and read-only paths absolute; seccomp has a
//!   default action and every syscall rule names non-empty syscalls.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use serde_json::Value;

use crate::error::{Error, Result};

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
            problems.extend(self::problems(&spec));
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

/// Every problem of a decoded spec, in document order.
fn problems(spec: &Spec) -> Vec<String> {
    let mut p = Vec::new();
    check_version(spec.version(), &mut p);
    match spec.root() {
        None => p.push("root: missing".to_owned()),
        Some(root) if root.path().as_os_str().is_empty() => {
            p.push("root.path: empty".to_owned());
        }
        Some(_) => {}
    }
    if let Some(mounts) = spec.mounts() {
        for (i, m) in mounts.iter().enumerate() {
            check_absolute(&format!("mounts[{i}].destination"), m.destination(), &mut p);
            if let Some(maps) = m.uid_mappings() {
                check_mappings(&format!("mounts[{i}].uidMappings"), maps, &mut p);
            }
            if let Some(maps) = m.gid_mappings() {
                check_mappings(&format!("mounts[{i}].gidMappings"), maps, &mut p);
            }
        }
    }
    check_process(spec, &mut p);
    check_hooks(spec, &mut p);
    check_linux(spec, &mut p);
    p
}

fn check_version(version: &str, p: &mut Vec<String>) {
    match semver_major(version) {
        None => p.push(format!(
            "ociVersion: {version:?} is not a SemVer 2.0.0 version"
        )),
        Some(1) => {}
        Some(major) => p.push(format!(
            "ociVersion: {version:?} has major version {major}, only 1 is supported"
        )),
    }
}

/// The major version of a SemVer 2.0.0 string, or `None` if it is not one.
fn semver_major(v: &str) -> Option<u64> {
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let ident_ok =
        |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let numeric_ok = |id: &str| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && (id == "0" || !id.starts_with('0'))
    };
    if let Some(build) = build
        && !build.split('.').all(ident_ok)
    {
        return None;
    }
    if let Some(pre) = pre {
        let ok = pre
            .split('.')
            .all(|id| ident_ok(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || numeric_ok(id)));
        if !ok {
            return None;
        }
    }
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|n| numeric_ok(n)) {
        return None;
    }
    parts[0].parse().ok()
}

fn check_absolute(field: &str, path: &Path, p: &mut Vec<String>) {
    if path.as_os_str().is_empty() {
        p.push(format!("{field}: empty"));
    } else if !path.is_absolute() {
        p.push(format!(
            "{field}: {} is not an absolute path",
            path.display()
        ));
    }
}

fn check_absolute_str(field: &str, path: &str, p: &mut Vec<String>) {
    check_absolute(field, Path::new(path), p);
}

fn check_process(spec: &Spec, p: &mut Vec<String>) {
    let Some(process) = spec.process() else {
        return;
    };
    match process.args() {
        None => p.push("process.args: missing".to_owned()),
        Some(args) if args.is_empty() => p.push("process.args: empty".to_owned()),
        Some(args) if args[0].is_empty() => p.push("process.args[0]: empty".to_owned()),
        Some(_) => {}
    }
    check_absolute("process.cwd", process.cwd(), p);
    if let Some(env) = process.env() {
        for (i, e) in env.iter().enumerate() {
            match e.split_once('=') {
                None => p.push(format!("process.env[{i}]: {e:?} has no '='")),
                Some(("", _)) => p.push(format!("process.env[{i}]: {e:?} has an empty name")),
                Some(_) if e.contains('\0') => {
                    p.push(format!("process.env[{i}]: contains a NUL byte"));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(caps) = process.capabilities() {
        let sets = [
            ("bounding", caps.bounding()),
            ("effective", caps.effective()),
            ("inheritable", caps.inheritable()),
            ("permitted", caps.permitted()),
            ("ambient", caps.ambient()),
        ];
        for (set, caps) in sets {
            for cap in caps.iter().flatten() {
                // oci-spec's enum may one day list capabilities newer than this kernel list.
                let name = serde_json::to_value(cap)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{cap:?}"));
                if !CAPABILITIES.contains(&name.as_str()) {
                    p.push(format!(
                        "process.capabilities.{set}: unknown capability {name}"
                    ));
                }
            }
        }
    }
    if let Some(rlimits) = process.rlimits() {
        let mut seen = HashSet::new();
        for (i, r) in rlimits.iter().enumerate() {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", r.typ()));
            if !RLIMITS.contains(&name.as_str()) {
                p.push(format!("process.rlimits[{i}].type: unknown rlimit {name}"));
            }
            if !seen.insert(name.clone()) {
                p.push(format!("process.rlimits[{i}].type: duplicate {name}"));
            }
            if r.soft() > r.hard() {
                p.push(format!(
                    "process.rlimits[{i}]: {name} soft limit {} is above hard limit {}",
                    r.soft(),
                    r.hard()
                ));
            }
        }
    }
}

fn check_hooks(spec: &Spec, p: &mut Vec<String>) {
    let Some(hooks) = spec.hooks() else {
        return;
    };
    let kinds = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (kind, list) in kinds {
        for (i, hook) in list.iter().flatten().enumerate() {
            check_absolute(&format!("hooks.{kind}[{i}].path"), hook.path(), p);
            if let Some(t) = hook.timeout()
                && t <= 0
            {
                p.push(format!(
                    "hooks.{kind}[{i}].timeout: {t} must be greater than zero"
                ));
            }
        }
    }
}

fn check_mappings(field: &str, maps: &[LinuxIdMapping], p: &mut Vec<String>) {
    if maps.len() > MAX_ID_MAPPINGS {
        p.push(format!(
            "{field}: {} entries, the kernel accepts at most {MAX_ID_MAPPINGS}",
            maps.len()
        ));
    }
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            p.push(format!("{field}[{i}].size: must be greater than zero"));
            continue;
        }
        if end(m.container_id(), m.size()) > 1 << 32 || end(m.host_id(), m.size()) > 1 << 32 {
            p.push(format!("{field}[{i}]: range overflows 32-bit ids"));
        }
        for (j, other) in maps.iter().enumerate().take(i) {
            if other.size() == 0 {
                continue;
            }
            let overlap = |a: u32, b: u32| {
                u64::from(a) < end(b, other.size()) && u64::from(b) < end(a, m.size())
            };
            if overlap(m.container_id(), other.container_id()) {
                p.push(format!("{field}[{i}]: container range overlaps entry {j}"));
            }
            if overlap(m.host_id(), other.host_id()) {
                p.push(format!("{field}[{i}]: host range overlaps entry {j}"));
            }
        }
    }
}

fn check_linux(spec: &Spec, p: &mut Vec<String>) {
    let Some(linux) = spec.linux() else {
        return;
    };
    let namespaces = linux.namespaces().as_deref().unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        if !seen.insert(ns.typ()) {
            p.push(format!(
                "linux.namespaces[{i}].type: duplicate namespace type {}",
                ns.typ()
            ));
        }
        if let Some(path) = ns.path() {
            check_absolute(&format!("linux.namespaces[{i}].path"), path, p);
        }
    }
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    let new_userns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let uid_maps = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid_maps = linux.gid_mappings().as_deref().unwrap_or_default();
    check_mappings("linux.uidMappings", uid_maps, p);
    check_mappings("linux.gidMappings", gid_maps, p);
    if has(LinuxNamespaceType::User) {
        if new_userns && (uid_maps.is_empty() || gid_maps.is_empty()) {
            p.push(
                "linux.uidMappings/gidMappings: a new user namespace needs both uid and gid mappings"
                    .to_owned(),
            );
        }
    } else if !uid_maps.is_empty() || !gid_maps.is_empty() {
        p.push(
            "linux.uidMappings/gidMappings: mappings are given but no user namespace is configured"
                .to_owned(),
        );
    }
    if !has(LinuxNamespaceType::Uts) {
        if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) {
            p.push("hostname: set without a UTS namespace".to_owned());
        }
        if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) {
            p.push("domainname: set without a UTS namespace".to_owned());
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort();
        for key in keys {
            if key.is_empty() {
                p.push("linux.sysctl: empty key".to_owned());
            } else if key.chars().any(char::is_whitespace) || key.contains('\0') {
                p.push(format!(
                    "linux.sysctl: key {key:?} contains whitespace or NUL"
                ));
            }
        }
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        check_absolute(&format!("linux.devices[{i}].path"), d.path(), p);
    }
    for (i, m) in linux.masked_paths().iter().flatten().enumerate() {
        check_absolute_str(&format!("linux.maskedPaths[{i}]"), m, p);
    }
    for (i, m) in linux.readonly_paths().iter().flatten().enumerate() {
        check_absolute_str(&format!("linux.readonlyPaths[{i}]"), m, p);
    }
    if let Some(seccomp) = linux.seccomp() {
        for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
            if rule.names().is_empty() {
                p.push(format!("linux.seccomp.syscalls[{i}].names: empty"));
            }
            for (j, name) in rule.names().iter().enumerate() {
                if name.is_empty() {
                    p.push(format!("linux.seccomp.syscalls[{i}].names[{j}]: empty"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        Capability, HookBuilder, HooksBuilder, LinuxBuilder, LinuxCapabilitiesBuilder,
        LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxSeccompAction, LinuxSeccompBuilder,
        LinuxSyscallBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
        RootBuilder, SpecBuilder, UserBuilder,
    };

    fn ns(t: LinuxNamespaceType) -> oci_spec::runtime::LinuxNamespace {
        LinuxNamespaceBuilder::default().typ(t).build().unwrap()
    }

    fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    /// A small spec that passes every check, built field by field (not from `Spec::default()`).
    fn good_spec() -> Spec {
        let mut caps = LinuxCapabilitiesBuilder::default()
            .bounding(
                [Capability::Chown, Capability::NetBindService]
                    .into_iter()
                    .collect::<HashSet<_>>(),
            )
            .effective([Capability::Chown].into_iter().collect::<HashSet<_>>())
            .build()
            .unwrap();
        // Unset sets would otherwise come from oci-spec's defaults.
        caps.set_inheritable(None);
        caps.set_permitted(None);
        caps.set_ambient(None);
        let process = ProcessBuilder::default()
            .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
            .args(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "true".to_owned(),
            ])
            .env(vec!["PATH=/usr/bin:/bin".to_owned(), "EMPTY=".to_owned()])
            .cwd("/")
            .capabilities(caps)
            .rlimits(vec![
                PosixRlimitBuilder::default()
                    .typ(PosixRlimitType::RlimitNofile)
                    .soft(1024u64)
                    .hard(4096u64)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let linux = LinuxBuilder::default()
            .namespaces(vec![
                ns(LinuxNamespaceType::Pid),
                ns(LinuxNamespaceType::Mount),
                ns(LinuxNamespaceType::Uts),
                ns(LinuxNamespaceType::User),
            ])
            .uid_mappings(vec![mapping(0, 100_000, 65_536)])
            .gid_mappings(vec![mapping(0, 100_000, 65_536)])
            .masked_paths(vec!["/proc/kcore".to_owned()])
            .readonly_paths(vec!["/proc/sys".to_owned()])
            .sysctl(
                [("net.ipv4.ip_forward".to_owned(), "1".to_owned())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .seccomp(
                LinuxSeccompBuilder::default()
                    .default_action(LinuxSeccompAction::ScmpActErrno)
                    .syscalls(vec![
                        LinuxSyscallBuilder::default()
                            .names(vec!["read".to_owned(), "write".to_owned()])
                            .action(LinuxSeccompAction::ScmpActAllow)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut spec = SpecBuilder::default()
            .version("1.1.0")
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(true)
                    .build()
                    .unwrap(),
            )
            .hostname("box")
            .mounts(vec![
                MountBuilder::default()
                    .destination("/proc")
                    .typ("proc")
                    .source("proc")
                    .build()
                    .unwrap(),
            ])
            .process(process)
            .hooks(
                HooksBuilder::default()
                    .create_runtime(vec![
                        HookBuilder::default()
                            .path("/usr/bin/hook")
                            .timeout(5i64)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .linux(linux)
            .build()
            .unwrap();
        // The builders fill unset fields from oci-spec's non-neutral defaults; clear the ones
        // this spec does not mean to set, so every value under test is chosen here.
        spec.set_annotations(None);
        spec.set_domainname(None);
        if let Some(p) = spec.process_mut() {
            p.set_apparmor_profile(None);
            p.set_selinux_label(None);
        }
        if let Some(l) = spec.linux_mut() {
            l.set_resources(None);
            l.set_devices(None);
            l.set_cgroups_path(None);
        }
        spec
    }

    fn problems_of(spec: &Spec) -> Vec<String> {
        match validate(spec) {
            Ok(()) => Vec::new(),
            Err(Error::InvalidSpec { problems }) => problems,
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    fn assert_one_problem(spec: &Spec, needle: &str) {
        let problems = problems_of(spec);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(needle),
            "{problems:?} lacks {needle:?}"
        );
    }

    #[test]
    fn good_spec_passes() {
        let spec = good_spec();
        validate(&spec).unwrap();
        // A spec without process, hooks or linux sections is fine too.
        // (SpecBuilder fills unset fields from the non-neutral Spec::default(): clear them.)
        let mut bare = SpecBuilder::default()
            .version("1.0.2-dev")
            .root(
                RootBuilder::default()
                    .path("/bundle/rootfs")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        bare.set_process(None);
        bare.set_linux(None);
        bare.set_mounts(None);
        bare.set_hostname(None);
        bare.set_annotations(None);
        assert!(bare.process().is_none() && bare.linux().is_none());
        validate(&bare).unwrap();
    }

    #[test]
    fn checks_oci_version() {
        for ok in [
            "1.0.0",
            "1.1.0",
            "1.0.2-dev",
            "1.2.0-rc.1+build.5",
            "1.0.0-0.3.7",
            "1.0.0-x-y",
        ] {
            let mut spec = good_spec();
            spec.set_version(ok.to_owned());
            validate(&spec).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, needle) in [
            ("", "SemVer"),
            ("1.0", "SemVer"),
            ("v1.0.0", "SemVer"),
            ("01.0.0", "SemVer"),
            ("1.0.0-", "SemVer"),
            ("1.0.0-01", "SemVer"),
            ("1.0.0+", "SemVer"),
            ("1.0.0-a..b", "SemVer"),
            ("1.0.0.0", "SemVer"),
            ("2.0.0", "major version 2"),
            ("0.9.0", "major version 0"),
        ] {
            let mut spec = good_spec();
            spec.set_version(bad.to_owned());
            assert_one_problem(&spec, needle);
            assert!(problems_of(&spec)[0].starts_with("ociVersion"), "{bad}");
        }
    }

    #[test]
    fn checks_root_and_process() {
        let mut spec = good_spec();
        spec.set_root(None);
        assert_one_problem(&spec, "root: missing");
        let mut spec = good_spec();
        spec.set_root(Some(RootBuilder::default().path("").build().unwrap()));
        assert_one_problem(&spec, "root.path: empty");

        let mut spec = good_spec();
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(Vec::new()));
        }
        assert_one_problem(&spec, "process.args: empty");
        if let Some(p) = spec.process_mut() {
            p.set_args(None);
        }
        assert_one_problem(&spec, "process.args: missing");
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(vec![String::new()]));
        }
        assert_one_problem(&spec, "process.args[0]: empty");

        let mut spec = good_spec();
        if let Some(p) = spec.process_mut() {
            p.set_cwd("relative/dir".into());
        }
        assert_one_problem(&spec, "process.cwd: relative/dir is not an absolute path");

        let mut spec = good_spec();
        if let Some(p) = spec.process_mut() {
            p.set_env(Some(vec!["NOEQUALS".to_owned(), "=value".to_owned()]));
        }
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("process.env[0]") && problems[1].contains("process.env[1]"));
    }

    #[test]
    fn checks_rlimits() {
        let rl = |t, soft: u64, hard: u64| {
            PosixRlimitBuilder::default()
                .typ(t)
                .soft(soft)
                .hard(hard)
                .build()
                .unwrap()
        };
        let mut spec = good_spec();
        if let Some(p) = spec.process_mut() {
            p.set_rlimits(Some(vec![
                rl(PosixRlimitType::RlimitNofile, 10, 10),
                rl(PosixRlimitType::RlimitNofile, 10, 10),
                rl(PosixRlimitType::RlimitCore, 5, 1),
            ]));
        }
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("duplicate RLIMIT_NOFILE"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("soft limit 5 is above hard limit 1"),
            "{problems:?}"
        );
    }

    #[test]
    fn checks_mounts_and_hooks() {
        let mut spec = good_spec();
        spec.set_mounts(Some(vec![
            MountBuilder::default()
                .destination("tmp")
                .typ("tmpfs")
                .build()
                .unwrap(),
            MountBuilder::default().destination("").build().unwrap(),
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source("/srv")
                .uid_mappings(vec![mapping(0, 1000, 0)])
                .gid_mappings(vec![mapping(0, 1000, 1)])
                .build()
                .unwrap(),
        ]));
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("mounts[0].destination: tmp is not an absolute path"));
        assert!(problems[1].starts_with("mounts[1].destination: empty"));
        assert!(problems[2].starts_with("mounts[2].uidMappings[0].size"));

        let mut spec = good_spec();
        spec.set_hooks(Some(
            HooksBuilder::default()
                .prestart(vec![HookBuilder::default().path("hook").build().unwrap()])
                .poststop(vec![
                    HookBuilder::default().path("/ok").build().unwrap(),
                    HookBuilder::default()
                        .path("/bin/x")
                        .timeout(0i64)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ));
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("hooks.prestart[0].path"));
        assert!(problems[1].starts_with("hooks.poststop[1].timeout"));
    }

    #[test]
    fn checks_namespaces_and_mappings() {
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            let mut joined = ns(LinuxNamespaceType::Network);
            joined.set_path(Some("proc/1/ns/net".into()));
            l.set_namespaces(Some(vec![
                ns(LinuxNamespaceType::Pid),
                ns(LinuxNamespaceType::Pid),
                joined,
                ns(LinuxNamespaceType::Uts),
                ns(LinuxNamespaceType::User),
            ]));
        }
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("duplicate namespace type pid"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("linux.namespaces[2].path"),
            "{problems:?}"
        );

        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            l.set_uid_mappings(Some(vec![
                mapping(0, 1000, 10),
                mapping(5, 2000, 10),
                mapping(100, 1005, 1),
                mapping(u32::MAX, 0, 2),
            ]));
        }
        let problems = problems_of(&spec);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("[1]: container range overlaps entry 0"));
        assert!(problems[1].contains("[2]: host range overlaps entry 0"));
        assert!(problems[2].contains("[3]: range overflows"));

        // Mappings without a user namespace, and a new user namespace without mappings.
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(vec![ns(LinuxNamespaceType::Uts)]));
        }
        assert_one_problem(&spec, "no user namespace is configured");
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            l.set_gid_mappings(None);
        }
        assert_one_problem(&spec, "needs both uid and gid mappings");
        // Joining an existing user namespace needs no mappings.
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            let mut userns = ns(LinuxNamespaceType::User);
            userns.set_path(Some("/proc/1/ns/user".into()));
            l.set_namespaces(Some(vec![ns(LinuxNamespaceType::Uts), userns]));
            l.set_uid_mappings(None);
            l.set_gid_mappings(None);
        }
        validate(&spec).unwrap();
        // A hostname needs a UTS namespace.
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(vec![ns(LinuxNamespaceType::User)]));
        }
        assert_one_problem(&spec, "hostname: set without a UTS namespace");
    }

    #[test]
    fn checks_sysctl_paths_and_seccomp() {
        let mut spec = good_spec();
        if let Some(l) = spec.linux_mut() {
            l.set_sysctl(Some(
                [
                    ("".to_owned(), "1".to_owned()),
                    ("a b".to_owned(), "1".to_owned()),
                ]
                .into_iter()
                .collect(),
            ));
            l.set_masked_paths(Some(vec!["proc/kcore".to_owned()]));
            l.set_readonly_paths(Some(vec![String::new()]));
            l.set_seccomp(Some(
                LinuxSeccompBuilder::default()
                    .default_action(LinuxSeccompAction::ScmpActAllow)
                    .syscalls(vec![
                        LinuxSyscallBuilder::default()
                            .names(Vec::<String>::new())
                            .action(LinuxSeccompAction::ScmpActErrno)
                            .build()
                            .unwrap(),
                        LinuxSyscallBuilder::default()
                            .names(vec!["ptrace".to_owned(), String::new()])
                            .action(LinuxSeccompAction::ScmpActErrno)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            ));
        }
        let problems = problems_of(&spec);
        assert_eq!(
            problems,
            vec![
                "linux.sysctl: empty key".to_owned(),
                "linux.sysctl: key \"a b\" contains whitespace or NUL".to_owned(),
                "linux.maskedPaths[0]: proc/kcore is not an absolute path".to_owned(),
                "linux.readonlyPaths[0]: empty".to_owned(),
                "linux.seccomp.syscalls[0].names: empty".to_owned(),
                "linux.seccomp.syscalls[1].names[1]: empty".to_owned(),
            ]
        );
    }

    #[test]
    fn reports_many_problems_together() {
        let mut spec = good_spec();
        spec.set_version("2.0".to_owned());
        spec.set_root(None);
        spec.set_mounts(Some(vec![
            MountBuilder::default()
                .destination("relative")
                .build()
                .unwrap(),
        ]));
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(Vec::new()));
            p.set_cwd("work".into());
        }
        spec.set_hooks(Some(
            HooksBuilder::default()
                .poststart(vec![
                    HookBuilder::default().path("hook.sh").build().unwrap(),
                ])
                .build()
                .unwrap(),
        ));
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(vec![
                ns(LinuxNamespaceType::Network),
                ns(LinuxNamespaceType::Network),
                ns(LinuxNamespaceType::User),
            ]));
            l.set_uid_mappings(Some(vec![mapping(0, 0, 0)]));
            l.set_sysctl(Some(
                [(String::new(), "x".to_owned())].into_iter().collect(),
            ));
        }
        let err = validate(&spec).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let Error::InvalidSpec { problems } = &err else {
            panic!("unexpected {err}");
        };
        let expected_prefixes = [
            "ociVersion:",
            "root: missing",
            "mounts[0].destination:",
            "process.args: empty",
            "process.cwd:",
            "hooks.poststart[0].path:",
            "linux.namespaces[1].type: duplicate",
            "linux.uidMappings[0].size:",
            "hostname: set without a UTS namespace",
            "linux.sysctl: empty key",
        ];
        assert_eq!(problems.len(), expected_prefixes.len(), "{problems:#?}");
        for (problem, prefix) in problems.iter().zip(expected_prefixes) {
            assert!(
                problem.starts_with(prefix),
                "{problem:?} should start with {prefix:?}"
            );
        }
        // The message lists them all.
        let message = err.to_string();
        for prefix in expected_prefixes {
            assert!(message.contains(prefix), "{message}");
        }
    }

    #[test]
    fn validate_json_reports_unknown_names_with_other_problems() {
        let json = r#"{
            "ociVersion": "1.1.0",
            "root": {"path": "rootfs"},
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sh"],
                "cwd": "relative",
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_FLY", "sys_admin"],
                    "effective": ["CAP_CHOWN"],
                    "ambient": [42]
                },
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
                    {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 2}
                ]
            },
            "linux": {
                "namespaces": [{"type": "mount"}],
                "seccomp": {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
            }
        }"#;
        let err = validate_json(json.as_bytes()).unwrap_err();
        let Error::InvalidSpec { problems } = &err else {
            panic!("unexpected {err}");
        };
        let expected = [
            "process.capabilities.bounding[1]: unknown capability \"CAP_FLY\"",
            "process.capabilities.bounding[2]: unknown capability \"sys_admin\"",
            "process.capabilities.ambient[0]: unknown capability 42",
            "process.rlimits[1].type: unknown rlimit \"RLIMIT_BOGUS\"",
            "linux.seccomp.defaultAction: missing",
            "process.cwd: relative is not an absolute path",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, prefix) in problems.iter().zip(expected) {
            assert!(
                problem.starts_with(prefix),
                "{problem:?} should start with {prefix:?}"
            );
        }

        // A clean document comes back decoded.
        let clean = r#"{
            "ociVersion": "1.1.0",
            "root": {"path": "rootfs"},
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sh"],
                "cwd": "/",
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}]
            },
            "linux": {
                "namespaces": [{"type": "mount"}],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
            }
        }"#;
        let spec = validate_json(clean.as_bytes()).unwrap();
        assert_eq!(spec.version(), "1.1.0");

        // Not JSON at all, and JSON that is not a spec.
        assert!(matches!(validate_json(b"{"), Err(Error::Json { .. })));
        let err = validate_json(br#"{"ociVersion": 7}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSpec { problems } if problems[0].contains("does not decode")),
            "{err}"
        );
    }

    #[test]
    fn capability_and_rlimit_tables_match_oci_spec() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("CAP_NOPE"), None);
        // Every name in our tables decodes with oci-spec, and its encoder writes it back.
        for name in CAPABILITIES {
            let cap: Capability = serde_json::from_value(Value::from(name)).unwrap();
            assert_eq!(serde_json::to_value(cap).unwrap(), Value::from(name));
        }
        for name in RLIMITS {
            let r: PosixRlimitType = serde_json::from_value(Value::from(name)).unwrap();
            assert_eq!(serde_json::to_value(r).unwrap(), Value::from(name));
        }
    }
}
