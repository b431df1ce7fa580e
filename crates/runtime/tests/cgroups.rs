//! cgroup limits take effect (youki contest groups cgroup_v1_pids,
//! cgroup_v1_memory, cgroup_v1_cpu, update). This host is a v1 hybrid.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use berth_runtime::ExitStatus;
use berth_runtime::oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use common::devices::{deny_all_devices, device_resources, device_rule};
use common::*;

fn v1_dir(controller: &str, cg: &str) -> Option<std::path::PathBuf> {
    berth_runtime::CgroupPaths::for_relative(cg)
        .v1
        .get(controller)
        .cloned()
}

#[test]
fn memory_limit_oom_kills() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let limit = 32 * 1024 * 1024i64;
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .reservation(limit / 2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // Hold 128 MiB in a shell variable: far above the limit.
    let s = spec_with_resources(
        &[
            "sh",
            "-c",
            "a=$(head -c 134217728 /dev/zero | tr '\\0' x); echo survived ${#a}",
        ],
        &cg,
        r,
    );
    let id = env.id("oom");
    let bundle = env.bundle(&id, &s);
    let (init, ro) = env.create_piped(&id, &bundle);
    if let Some(dir) = v1_dir("memory", &cg) {
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.soft_limit_in_bytes"))
                .unwrap()
                .trim(),
            (limit / 2).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            limit.to_string()
        );
    }
    env.runtime.start(&id).unwrap();
    let status = init.wait().unwrap();
    let out = read_all(ro);
    assert!(!out.contains("survived"), "the allocation succeeded: {out}");
    // The shell's child (tr) or the shell itself was OOM-killed: the cgroup recorded it.
    if let Some(dir) = v1_dir("memory", &cg) {
        // Usage reached the limit (failcnt stays 0 on this kernel's v1 memcg).
        let max_usage: i64 = std::fs::read_to_string(dir.join("memory.max_usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            max_usage >= limit - 1024 * 1024,
            "max usage {max_usage} below the limit (status {status:?})"
        );
        let oom = std::fs::read_to_string(dir.join("memory.oom_control")).unwrap();
        let kills: u64 = oom
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap();
        assert!(kills > 0, "no OOM kill recorded: {oom}");
    }
    assert_ne!(status, ExitStatus::Exited(0), "{status:?}");
    env.runtime.delete(&id, false).unwrap();
    assert_no_cgroup(&cg);
}

#[test]
fn pids_limit_refuses_fork() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(4i64).build().unwrap())
        .build()
        .unwrap();
    let s = spec_with_resources(
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait; echo done",
        ],
        &cg,
        r,
    );
    let (st, out, err) = env.run("pids", s);
    // busybox sh gives up at the first refused fork.
    assert!(
        err.contains("can't fork"),
        "forks were not refused: {err:?} ({st:?})"
    );
    assert_ne!(out, "done\n");
    assert_ne!(st, ExitStatus::Exited(0));
    assert_no_cgroup(&cg);
}

#[test]
fn cpu_resources_applied_and_updated() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50000i64)
                .period(100000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(50i64).build().unwrap())
        .build()
        .unwrap();
    let id = env.id("cpu");
    let bundle = env.bundle(&id, &spec_with_resources(&["sleep", "1000"], &cg, r));
    let init = env.create(&id, &bundle);
    let paths = env.runtime.state(&id).unwrap().cgroup_paths();
    assert_eq!(
        paths,
        berth_runtime::cgroup_paths(env.runtime.root(), &id).unwrap()
    );
    let read = |c: &str, f: &str| -> String {
        std::fs::read_to_string(paths.v1.get(c).unwrap().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    if !berth_runtime::cgroups::is_unified() {
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        assert_eq!(read("cpuset", "cpuset.mems"), "0");
        assert_eq!(read("pids", "pids.max"), "50");
        // The init process is in every hierarchy's cgroup.
        for c in ["cpu", "memory", "pids", "freezer"] {
            assert_eq!(read(c, "cgroup.procs"), init.pid().to_string(), "{c}");
        }
    }
    env.runtime.start(&id).unwrap();
    let update = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(7i64).build().unwrap())
        .cpu(LinuxCpuBuilder::default().shares(256u64).build().unwrap())
        .build()
        .unwrap();
    env.runtime.update(&id, &update).unwrap();
    if !berth_runtime::cgroups::is_unified() {
        assert_eq!(read("pids", "pids.max"), "7");
        assert_eq!(read("cpu", "cpu.shares"), "256");
    }
    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
    assert_no_cgroup(&cg);
}

#[test]
fn device_cgroup_allows_only_default_and_spec_devices() {
    if !privileged() {
        return;
    }
    if berth_runtime::cgroups::is_unified() {
        eprintln!("skipping: checks the v1 devices controller (v2: see cgroup_v2.rs)");
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    use berth_runtime::oci_spec::runtime::LinuxDeviceType;
    let r = device_resources(vec![
        // The spec may allow more: /dev/loop-control style 10:237.
        device_rule(true, LinuxDeviceType::C, 10, 237, "rw"),
    ]);
    let s = spec_with_resources(
        &[
            "sh",
            "-c",
            "mknod /tmp/sda b 8 0 && echo mknod-ok; head -c1 /tmp/sda >/dev/null 2>&1 && echo read-ok || echo read-denied; \
             head -c1 /dev/zero | wc -c",
        ],
        &cg,
        r,
    );
    let id = env.id("devcg");
    let bundle = env.bundle(&id, &s);
    let (init, ro) = env.create_piped(&id, &bundle);
    let list =
        std::fs::read_to_string(v1_dir("devices", &cg).unwrap().join("devices.list")).unwrap();
    for want in ["c 1:3 rwm", "c 136:* rwm", "c 10:237 rw", "b *:* m"] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} missing from {list}"
        );
    }
    assert!(!list.contains("a *:* rwm"), "{list}");
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(ro), "mknod-ok\nread-denied\n1\n");
    env.runtime.delete(&id, false).unwrap();
    assert_no_cgroup(&cg);
}

/// The spec's leading deny-all rule (runc's and podman's default) must not
/// revoke the runtime's allowances: they are appended after the spec's rules.
/// A device the spec creates (`linux.devices`) without an allow rule stays
/// denied, as does any other node made inside.
#[test]
fn device_cgroup_spec_deny_all_keeps_default_devices() {
    if !privileged() {
        return;
    }
    if berth_runtime::cgroups::is_unified() {
        eprintln!("skipping: checks the v1 devices controller (v2: see cgroup_v2.rs)");
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    use berth_runtime::oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceType};
    let r = device_resources(vec![deny_all_devices()]);
    let sdx = LinuxDeviceBuilder::default()
        .path("/dev/sdx")
        .typ(LinuxDeviceType::B)
        .major(8i64)
        .minor(0i64)
        .file_mode(0o600u32)
        .build()
        .unwrap();
    let linux = linux_builder(&cg)
        .resources(r)
        .devices(vec![sdx])
        .build()
        .unwrap();
    let s = spec_builder(
        &[
            "sh",
            "-c",
            "echo x >/dev/null && echo null-ok; head -c3 /dev/zero | wc -c; \
             test -b /dev/sdx && echo sdx-exists; \
             head -c1 /dev/sdx >/dev/null 2>&1 && echo sdx-read || echo sdx-denied; \
             mknod /tmp/mem c 1 1 && echo mknod-ok; \
             head -c1 /tmp/mem >/dev/null 2>&1 && echo mem-read || echo mem-denied",
        ],
        &cg,
    )
    .linux(linux)
    .build()
    .unwrap();
    let id = env.id("denyall");
    let bundle = env.bundle(&id, &s);
    let (init, ro) = env.create_piped(&id, &bundle);
    let list =
        std::fs::read_to_string(v1_dir("devices", &cg).unwrap().join("devices.list")).unwrap();
    for want in ["c 1:3 rwm", "c 1:5 rwm", "c 136:* rwm", "b *:* m"] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} missing from {list}"
        );
    }
    assert!(!list.contains("a *:* rwm"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("b 8:")), "{list}");
    env.runtime.start(&id).unwrap();
    let out = read_all(ro);
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0), "{out}");
    assert_eq!(
        out,
        "null-ok\n3\nsdx-exists\nsdx-denied\nmknod-ok\nmem-denied\n"
    );
    env.runtime.delete(&id, false).unwrap();
    assert_no_cgroup(&cg);
}

/// Removes a test's own cgroup directories (innermost first) even when the test fails.
struct CgroupDirsGuard(Vec<std::path::PathBuf>);

impl Drop for CgroupDirsGuard {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn subdirs(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Without `cgroupsPath` the container lives in `/berth/<id>`; deleting it
/// removes `/berth` too when no other container uses it.
#[test]
fn delete_removes_the_default_parent_when_empty() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("prune");
    let mut s = spec(&["true"], "unused");
    let mut linux = s.linux().clone().unwrap();
    linux.set_cgroups_path(None);
    s.set_linux(Some(linux));
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let paths = env.runtime.state(&id).unwrap().cgroup_paths();
    assert_eq!(paths.relative, format!("/berth/{id}"));
    let dirs = cgroup_dirs(&paths);
    assert!(
        dirs.iter().any(|d| d.is_dir()),
        "no cgroup created: {paths:?}"
    );
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    env.runtime.delete(&id, false).unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
        let parent = d.parent().unwrap();
        assert!(parent.ends_with("berth"), "{}", parent.display());
        // Another container (a parallel test) may still use the parent.
        assert!(
            !parent.exists() || !subdirs(parent).is_empty(),
            "empty parent {} left behind",
            parent.display()
        );
        // The hierarchy root itself is never removed.
        assert!(parent.parent().unwrap().is_dir());
    }
}

/// A parent named by the caller's `cgroupsPath` belongs to the caller: delete
/// leaves it, even empty.
#[test]
fn delete_keeps_a_callers_parent_cgroup() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let parent = unique("cgparent");
    let cg = format!("{parent}/c");
    let parent_dirs = cgroup_dirs(&berth_runtime::CgroupPaths::for_relative(&parent));
    let _guard = CgroupDirsGuard(parent_dirs.clone());
    let (st, _, err) = env.run("keep", spec(&["true"], &cg));
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_no_cgroup(&cg);
    assert!(
        parent_dirs.iter().any(|d| d.is_dir()),
        "the caller's parent {parent} was removed"
    );
}
