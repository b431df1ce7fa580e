//! The cgroup v2 code path on a v1-hybrid host: a helper process makes a
//! private mount namespace whose `/sys/fs/cgroup` is the host's cgroup2
//! hierarchy (the one hybrid hosts keep at `/sys/fs/cgroup/unified`), so
//! the runtime sees a unified host, and drives a container through
//! create/start/pause/resume/exec/kill/delete there. Only core v2 features
//! (membership, `cgroup.freeze`, `cgroup.procs`, a cgroup2 mount in the
//! container) can be checked: this host enables no resource controllers
//! in that tree.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    clippy::exit,
    missing_docs
)]

mod common;

use std::path::Path;
use std::process::Command;

use berth_runtime::oci_spec::runtime::MountBuilder;
use berth_runtime::{CreateOptions, ExecOptions, ExitStatus, Status, Stdio};
use common::*;

const HELPER: &str = "BERTH_TEST_HELPER_V2";

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, target) = (c(src), c(target));
    let fstype = fstype.map(c);
    // SAFETY: valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "mount {target:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// Helper: in a private mount namespace with a unified /sys/fs/cgroup, run
/// a container lifecycle; exit 0 on success (a panic fails the helper).
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_lifecycle_on_unified_hierarchy() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    // SAFETY: unshare of the mount namespace in this (helper) process.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
    mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE);
    mount("cgroup2", "/sys/fs/cgroup", Some("cgroup2"), 0);
    assert!(
        berth_runtime::cgroups::is_unified(),
        "the view is not unified"
    );

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
    let init = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap();
    let paths = env.runtime.state(&id).unwrap().cgroup_paths();
    let dir = paths.unified.clone().unwrap();
    assert_eq!(dir, Path::new("/sys/fs/cgroup").join(&cg));
    let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", init.pid())).unwrap();
    assert!(
        membership.lines().any(|l| l == format!("0::/{cg}")),
        "{membership}"
    );
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
    let (r, w) = pipe();
    let p = process_builder(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3",
    ])
    .build()
    .unwrap();
    let child = env
        .runtime
        .exec(
            &id,
            &p,
            ExecOptions {
                stdout: Stdio::Fd(w),
                ..Default::default()
            },
        )
        .unwrap();
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
    println!("V2-LIFECYCLE-OK");
    std::process::exit(0);
}

#[test]
fn lifecycle_on_a_unified_cgroup_hierarchy() {
    if !privileged() {
        return;
    }
    let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| {
                    l.split(" - ")
                        .nth(1)
                        .is_some_and(|f| f.starts_with("cgroup2 "))
                        && l.split_whitespace().nth(4) == Some(*p)
                })
        });
    if unified.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI host has no cgroup2 hierarchy"
        );
        eprintln!("skipping: no cgroup2 hierarchy on this host");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_lifecycle_on_unified_hierarchy",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("V2-LIFECYCLE-OK"),
        "v2 helper failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
