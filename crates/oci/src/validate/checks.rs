//! The checks on a decoded spec, one function per section, each appending problems in
//! document order.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::{CAPABILITIES, MAX_ID_MAPPINGS, RLIMITS};

/// The values `linux.rootfsPropagation` may take (those runc accepts).
const ROOTFS_PROPAGATIONS: [&str; 8] = [
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
];

/// IPC sysctls outside the `fs.mqueue.` prefix (see `sysctl_namespace`).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a sysctl belongs to, or `None` when it is global (setting it from a container
/// would change the host), following runc's rules.
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// Every problem of a decoded spec, in document order.
pub(super) fn problems(spec: &Spec) -> Vec<String> {
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
    if let Some(adj) = process.oom_score_adj()
        && !(-1000..=1000).contains(&adj)
    {
        p.push(format!(
            "process.oomScoreAdj: {adj} is outside -1000..=1000"
        ));
    }
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
    let uid_maps = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid_maps = linux.gid_mappings().as_deref().unwrap_or_default();
    check_mappings("linux.uidMappings", uid_maps, p);
    check_mappings("linux.gidMappings", gid_maps, p);
    // A new user namespace without mappings is allowed: the runtime may supply defaults (crun
    // maps the calling user for `crun spec --rootless`). Mappings without a user namespace are
    // refused, as runc does.
    if !has(LinuxNamespaceType::User) && (!uid_maps.is_empty() || !gid_maps.is_empty()) {
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
            } else {
                match sysctl_namespace(key) {
                    Some(ns) if has(ns) => {}
                    Some(ns) => p.push(format!(
                        "linux.sysctl: {key} needs namespace type {ns}, which is not configured"
                    )),
                    None => p.push(format!(
                        "linux.sysctl: {key} is not namespaced; setting it would change the host"
                    )),
                }
            }
        }
    }
    if let Some(propagation) = linux.rootfs_propagation()
        && !ROOTFS_PROPAGATIONS.contains(&propagation.as_str())
    {
        p.push(format!(
            "linux.rootfsPropagation: unknown value {propagation:?} (expected one of {})",
            ROOTFS_PROPAGATIONS.join(", ")
        ));
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
