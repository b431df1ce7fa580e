//! `spec`: a default config.json, the one runc writes (hostname aside), for a bundle whose
//! root filesystem is `rootfs/`.
//!
//! `--rootless` turns it into a spec for an unprivileged caller the way runc does: a user
//! namespace mapping the caller's uid/gid to root, no network namespace, `/sys` bound from the
//! host instead of mounted, no cgroup mount, no devpts `gid=5`, and no resource limits.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The `ociVersion` written by `spec`: 1.1.0, which berth-runtime implements and older runtimes
/// (crun 1.8 refuses 1.2.0) accept, so one bundle serves every runtime.
pub const SPEC_VERSION: &str = "1.1.0";

/// The default spec runc's `spec` writes.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Turns a spec into one for a rootless container mapped to `uid`/`gid`.
pub fn make_rootless(spec: &mut Value, uid: u32, gid: u32) {
    if let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("resources");
        if let Some(ns) = linux.get_mut("namespaces").and_then(Value::as_array_mut) {
            ns.retain(|n| n["type"] != "network" && n["type"] != "user");
            ns.push(json!({ "type": "user" }));
        }
        linux.insert(
            "uidMappings".into(),
            json!([{ "containerID": 0, "hostID": uid, "size": 1 }]),
        );
        linux.insert(
            "gidMappings".into(),
            json!([{ "containerID": 0, "hostID": gid, "size": 1 }]),
        );
    }
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        mounts.retain(|m| m["type"] != "cgroup");
        for mount in mounts.iter_mut() {
            if mount["destination"] == "/sys" {
                *mount = json!({
                    "destination": "/sys", "type": "none", "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]
                });
            } else if let Some(opts) = mount.get_mut("options").and_then(Value::as_array_mut) {
                opts.retain(|o| o != "gid=5");
            }
        }
    }
}

/// Writes the default spec (rootless if asked) to `<bundle>/config.json`.
///
/// Errors: config.json exists already (it is never overwritten), or cannot be written.
pub fn write_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let mut spec = default_spec();
    if rootless {
        make_rootless(
            &mut spec,
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
    }
    let path = bundle.join("config.json");
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            bail!("File {} exists. Remove it first", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
    };
    let mut text = serde_json::to_vec_pretty(&spec)?;
    text.push(b'\n');
    file.write_all(&text)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_a_valid_oci_spec() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(default_spec()).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &["sh"]
        );
    }

    #[test]
    fn rootless_spec_maps_the_caller_and_drops_network() {
        let mut spec = default_spec();
        make_rootless(&mut spec, 1000, 1001);
        let spec: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let kinds: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(kinds.contains(&oci_spec::runtime::LinuxNamespaceType::User));
        assert!(!kinds.contains(&oci_spec::runtime::LinuxNamespaceType::Network));
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].host_id(), 1000);
        assert_eq!(linux.gid_mappings().as_ref().unwrap()[0].host_id(), 1001);
        assert!(linux.resources().is_none());
        let mounts = spec.mounts().as_ref().unwrap();
        assert!(mounts.iter().all(|m| m.typ().as_deref() != Some("cgroup")));
    }

    #[test]
    fn never_overwrites_config() {
        let dir = tempfile::tempdir().unwrap();
        write_spec(dir.path(), false).unwrap();
        let err = write_spec(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
    }
}
