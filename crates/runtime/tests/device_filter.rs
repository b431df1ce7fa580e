//! Device rules through the cgroup2 eBPF device program on a hybrid host
//! (v1 controllers plus a cgroup2 tree at `/sys/fs/cgroup/unified`).
//!
//! To show that the program, not the v1 devices controller, refuses an
//! access, each test opens the container's v1 devices cgroup to everything
//! (`a *:* rwm` in `devices.allow`) before the container runs. The device
//! used is `/dev/net/tun` (c 10:200): not among the runtime's default
//! devices, and opening it needs no capability, so an `EPERM` can only come
//! from the device cgroup. The pure-v2 path is tested in `cgroup_v2.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};

use berth_runtime::cgroups::{bpf, device_filter};
use berth_runtime::oci_spec::runtime::{LinuxPidsBuilder, LinuxResourcesBuilder};
use berth_runtime::{CreateOptions, ExitStatus};
use common::cgroup2_view::{
    OnUnifiedHost, assert_cgroup2_member, assert_sole_process, enter_v1_only_view, hybrid_host,
};
use common::devices::*;
use common::helper::{helper_passed, is_helper, run_helper_test};
use common::*;

/// True on a hybrid host (with root); otherwise says why it skips.
fn hybrid() -> bool {
    hybrid_host(
        "its device program is tested in cgroup_v2.rs",
        OnUnifiedHost::Skip,
    )
}

/// Opens the v1 devices cgroup of `cg` to every device.
fn open_v1_devices(cg: &str) {
    let dir = berth_runtime::CgroupPaths::for_relative(cg).v1["devices"].clone();
    std::fs::write(dir.join("devices.allow"), "a *:* rwm").unwrap();
    let list = v1_devices_list(cg);
    assert_eq!(list.trim(), "a *:* rwm", "v1 still restricts: {list}");
}

fn unified_dir(env: &Env, id: &str, cg: &str) -> PathBuf {
    let dir = env.unified_cgroup_dir(id);
    assert_eq!(dir, Path::new("/sys/fs/cgroup/unified").join(cg));
    dir
}

/// On a hybrid host the container also lives in the cgroup2 tree, with the
/// device program attached there; with the v1 controller opened to
/// everything, the program alone refuses what the rules deny, per access
/// (the rule allows reading tun, not writing it). Replacing the program
/// with an allow-all one (the same install path `update` takes) lifts the
/// denial: it was the program's.
#[test]
fn hybrid_program_denies_what_v1_allows() {
    if !hybrid() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let id = env.id("bpfdeny");
    let s = device_sleeper(&cg, vec![tun_rule("r")]);
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let dir = unified_dir(&env, &id, &cg);
    assert!(dir.is_dir());
    // The init is a member of the cgroup2 directory too.
    assert_cgroup2_member(init.pid(), &cg);
    assert_sole_process(&dir, init.pid());
    let first = our_program(&dir);
    open_v1_devices(&cg);
    env.runtime.start(&id).unwrap();

    let out = env.exec_sh(&id, TUN_PROBE);
    assert_tun_read_only(&out);

    // Swap in a program that allows everything: the denials go away.
    let allow_all = device_filter::DeviceRule {
        allow: true,
        typ: device_filter::RuleType::All,
        major: None,
        minor: None,
        access: device_filter::ACC_READ | device_filter::ACC_WRITE | device_filter::ACC_MKNOD,
    };
    let new = bpf::install(&dir, &device_filter::compile(&[allow_all])).unwrap();
    assert_ne!(new, first);
    assert_eq!(our_program(&dir), new, "the old program was not detached");
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-ok", "w-ok", "rw-ok"]);

    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_no_cgroup(&cg);
    // The removed cgroup releases its program (asynchronously, in the kernel).
    assert!(
        !bpf::is_loaded(first).unwrap(),
        "the replaced program leaked"
    );
    wait_until_unloaded(new);
}

/// `update` with device rules replaces the container's program (one of
/// ours stays attached, with a new id) and the rules take effect on the
/// running container; an update without device rules leaves the program.
#[test]
fn hybrid_update_replaces_the_program() {
    if !hybrid() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let id = env.id("bpfupd");
    let bundle = env.bundle(&id, &device_sleeper(&cg, vec![]));
    let init = env.create(&id, &bundle);
    let dir = unified_dir(&env, &id, &cg);
    let first = our_program(&dir);
    open_v1_devices(&cg);
    env.runtime.start(&id).unwrap();
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-denied", "w-denied", "rw-denied"]);

    let grant = tun_resources("rw");
    env.runtime.update(&id, &grant).unwrap();
    // v1 got the same list: rebuilt from deny-all, so the test's `a *:* rwm` is gone.
    let list = v1_devices_list(&cg);
    assert_has_lines(&list, &["c 10:200 rw", "c 1:3 rwm"]);
    assert!(!has_line(&list, "a *:* rwm"), "{list}");
    let second = our_program(&dir);
    assert_ne!(second, first);
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-ok", "w-ok", "rw-ok"]);

    // Not about devices: the program stays.
    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
        .build()
        .unwrap();
    env.runtime.update(&id, &pids).unwrap();
    assert_eq!(our_program(&dir), second);

    // Rules replace, not add to, the previous ones: tun is denied again,
    // with v1 opened once more so only the program can refuse.
    // Shaped like containerd's spec list (a leading deny-all): the
    // runtime's allowances (/dev/null) survive it.
    let revoke = device_resources(vec![deny_all_devices(), tun_rule("m")]);
    env.runtime.update(&id, &revoke).unwrap();
    open_v1_devices(&cg);
    assert_ne!(our_program(&dir), second);
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["rw-denied", "null-ok"]);

    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
    assert_no_cgroup(&cg);
}

/// A rule the filter cannot express is refused at create, naming it, and
/// leaves no cgroup behind.
#[test]
fn invalid_device_rule_is_refused() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let id = env.id("badrule");
    let mut bad = tun_rule("rw");
    bad.set_access(Some("rwx".into()));
    let bundle = env.bundle(&id, &device_sleeper(&cg, vec![bad]));
    let err = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        berth_runtime::ErrorKind::InvalidArgument,
        "{err}"
    );
    assert!(err.to_string().contains("devices[0]"), "{err}");
    assert_no_cgroup(&cg);
}

const HELPER: &str = "BERTH_TEST_HELPER_V1_VIEW";

/// Helper: in a private mount namespace whose cgroup2 tree is hidden under
/// a tmpfs (as `shared/bench/cgv1-view.sh` hides it: mountinfo still lists
/// the cgroup2 mount, but its mount point is now another file system), the
/// runtime treats the host as v1-only: no cgroup2 directory, no device
/// program, nothing written into the tmpfs; the v1 devices controller
/// carries the rules and a container runs and is deleted cleanly.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_hidden_cgroup2_tree_is_not_used() {
    if !is_helper(HELPER) {
        return;
    }
    let hidden = enter_v1_only_view();

    let env = Env::new();
    let cg = unique("cg");
    let id = env.id("v1view");
    let s = device_sleeper(&cg, vec![tun_rule("r")]);
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let paths = env.runtime.state(&id).unwrap().cgroup_paths();
    assert_eq!(paths.unified, None, "{paths:?}");
    assert_eq!(std::fs::read_dir(hidden).unwrap().count(), 0);
    let list = std::fs::read_to_string(paths.v1["devices"].join("devices.list")).unwrap();
    assert_has_lines(&list, &["c 10:200 r"]);
    env.runtime.start(&id).unwrap();
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-ok", "w-denied"]);
    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert_no_cgroup(&cg);
    assert_eq!(std::fs::read_dir(hidden).unwrap().count(), 0);
    // exit() skips destructors: remove the temp dir (state root, bundle) first.
    drop(env);
    helper_passed("V1-VIEW-OK");
}

/// A hybrid host seen through a v1-only view (the benchmark's
/// `cgv1-view.sh`): the hidden cgroup2 tree is neither used nor written to.
#[test]
fn hidden_cgroup2_tree_is_not_used() {
    if !hybrid() {
        return;
    }
    run_helper_test(
        HELPER,
        "helper_hidden_cgroup2_tree_is_not_used",
        &[],
        "V1-VIEW-OK",
    );
}
