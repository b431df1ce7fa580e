//! The cgroup v2 code path on a v1-hybrid host: a helper process makes a
//! private mount namespace whose `/sys/fs/cgroup` is the host's cgroup2
//! hierarchy (the one hybrid hosts keep at `/sys/fs/cgroup/unified`), so
//! the runtime sees a unified host, and drives a container through
//! create/start/pause/resume/exec/kill/delete there. Only core v2 features
//! (membership, `cgroup.freeze`, `cgroup.procs`, a cgroup2 mount in the
//! container) and device rules (an eBPF program, no controller needed) can
//! be checked: this host enables no resource controllers in that tree.
//! The runtime leaves the v1 devices controller alone in that view, so the
//! program is the only thing that can refuse a device there.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::path::Path;

use berth_runtime::cgroups::bpf;
use berth_runtime::oci_spec::runtime::MountBuilder;
use berth_runtime::{ExitStatus, Status};
use common::cgroup2_view::{assert_cgroup2_member, cgroup2_hierarchy, enter_unified_view};
use common::devices::*;
use common::helper::{helper_passed, is_helper, run_helper_test};
use common::*;

const HELPER: &str = "BERTH_TEST_HELPER_V2";

/// Helper: in a private mount namespace with a unified /sys/fs/cgroup, run
/// a container lifecycle; exit 0 on success (a panic fails the helper).
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_lifecycle_on_unified_hierarchy() {
    if !is_helper(HELPER) {
        return;
    }
    enter_unified_view();

    let env = Env::new();
    let id = env.id("v2");
    let cg = unique("cg");
    let mut mounts = default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(vec!["nosuid".to_string(), "ro".to_string()])
            .build()
            .unwrap(),
    );
    let s = spec_builder(&["sleep", "1000"], &cg)
        .mounts(mounts)
        .build()
        .unwrap();
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let dir = env.unified_cgroup_dir(&id);
    assert_eq!(dir, Path::new("/sys/fs/cgroup").join(&cg));
    assert_cgroup2_member(init.pid(), &cg);
    env.runtime.start(&id).unwrap();
    assert_eq!(env.runtime.pids(&id).unwrap(), vec![init.pid()]);

    env.runtime.pause(&id).unwrap();
    assert_eq!(env.runtime.state(&id).unwrap().status, Status::Paused);
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    env.runtime.resume(&id).unwrap();
    assert_eq!(env.runtime.state(&id).unwrap().status, Status::Running);

    // Inside: a cgroup2 mount rooted at the container's cgroup namespace.
    let p = process_builder(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3",
    ])
    .build()
    .unwrap();
    let (child, r) = env.exec_piped(&id, &p);
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    // The v1 hierarchies still exist on this kernel; the v2 line is what counts.
    let out = read_all(r);
    assert!(out.lines().any(|l| l == "0::/"), "{out}");
    assert_eq!(out.lines().last(), Some("cgroup2"), "{out}");

    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert!(!dir.exists(), "{} left behind", dir.display());
    // exit() skips destructors: remove the temp dir (state root, bundle) first.
    drop(env);
    helper_passed("V2-LIFECYCLE-OK");
}

/// Helper: device rules on a unified hierarchy. The spec allows reading
/// `/dev/net/tun` (c 10:200), not writing it; opening it needs no
/// capability, so only the device program can refuse. An `update` then
/// grants writing, replacing the program.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_device_rules_on_unified_hierarchy() {
    if !is_helper(HELPER) {
        return;
    }
    enter_unified_view();
    let env = Env::new();
    let id = env.id("v2dev");
    let cg = unique("cg");
    let s = device_sleeper(&cg, vec![tun_rule("r")]);
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let dir = env.unified_cgroup_dir(&id);
    let first = our_program(&dir);
    env.runtime.start(&id).unwrap();

    let probe = "mknod /tmp/tun c 10 200 && echo mknod-ok; \
         sh -c 'true </tmp/tun' && echo r-ok || echo r-denied; \
         sh -c 'true >/tmp/tun' && echo w-ok || echo w-denied; \
         mknod /tmp/loop b 7 0 && echo bmknod-ok; \
         sh -c 'true </tmp/loop' && echo b-ok || echo b-denied; \
         echo x >/dev/null && echo null-ok; head -c2 /dev/zero | wc -c";
    let out = env.exec_sh(&id, probe);
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.ends_with("Operation not permitted"))
        .collect();
    assert_eq!(
        lines,
        [
            "mknod-ok",
            "r-ok",
            "w-denied",
            "bmknod-ok",
            "b-denied",
            "null-ok",
            "2"
        ],
        "{out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");

    let grant = tun_resources("rw");
    env.runtime.update(&id, &grant).unwrap();
    let second = our_program(&dir);
    assert_ne!(second, first);
    let out = env.exec_sh(&id, "sh -c 'true <>/tmp/tun' && echo rw-ok");
    assert_eq!(out, "rw-ok\n");

    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The replaced program was detached (and freed); the last one goes with the cgroup.
    assert!(!bpf::is_loaded(first).unwrap());
    wait_until_unloaded(second);
    drop(env);
    helper_passed("V2-DEVICES-OK");
}

/// Runs helper test `name` in a child process; it must print `marker`.
/// Skips (saying why) when the host has no cgroup2 tree, except in CI.
fn run_helper(name: &str, marker: &str) {
    if !cgroup2_hierarchy() {
        return;
    }
    run_helper_test(HELPER, name, &[], marker);
}

#[test]
fn lifecycle_on_a_unified_cgroup_hierarchy() {
    run_helper("helper_lifecycle_on_unified_hierarchy", "V2-LIFECYCLE-OK");
}

#[test]
fn device_rules_on_a_unified_cgroup_hierarchy() {
    run_helper("helper_device_rules_on_unified_hierarchy", "V2-DEVICES-OK");
}
