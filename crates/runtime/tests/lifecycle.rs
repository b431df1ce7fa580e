//! Lifecycle: create/start/state/kill/delete, exec, pause/resume, delete
//! --force, two containers at once, failures that leave
//! nothing behind (youki contest groups: lifecycle, create, delete,
//! kill_container, exec, prohibit_symlink). Hooks and the pid file: hooks.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::oci_spec::runtime::MountBuilder;
use berth_runtime::{
    CreateOptions, ErrorKind, ExecOptions, ExitStatus, Runtime, Status, Stdio, Step,
};
use common::*;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn create_start_kill_delete_with_state_from_a_fresh_instance() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("life");
    let cg = unique("cg");
    let bundle = env.bundle(
        &id,
        &spec(&["sh", "-c", "touch /data/started; exec sleep 1000"], &cg),
    );
    let data = env.dir.path().join(format!("{id}-data"));
    std::fs::create_dir_all(&data).unwrap();
    let mut s: oci_spec::runtime::Spec =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(data.clone())
            .options(vec!["rbind".to_string(), "rw".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let mut ann = std::collections::HashMap::new();
    ann.insert("org.berth.test".to_string(), "yes".to_string());
    s.set_annotations(Some(ann));
    let bundle = env.bundle(&id, &s);

    let init = env.create(&id, &bundle);
    // A second runtime instance (as another CLI process would) sees it.
    let other = Runtime::new(env.runtime.root()).unwrap();
    let st = other.state(&id).unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(st.pid, Some(init.pid()));
    assert_eq!(st.bundle, bundle.canonicalize().unwrap());
    assert_eq!(
        st.annotations.get("org.berth.test").map(String::as_str),
        Some("yes")
    );
    let oci = serde_json::to_value(st.to_oci()).unwrap();
    assert_eq!(oci["status"], "created");
    assert_eq!(oci["id"], id.as_str());
    assert!(alive(init.pid()));
    // The user program has not run yet.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!data.join("started").exists());
    assert_eq!(other.list().unwrap(), vec![id.clone()]);

    other.start(&id).unwrap();
    wait_for("program start", || data.join("started").exists());
    assert_eq!(other.state(&id).unwrap().status, Status::Running);
    assert_eq!(
        other.start(&id).unwrap_err().kind(),
        ErrorKind::FailedPrecondition,
        "a second start must be refused"
    );
    assert_eq!(
        other.delete(&id, false).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    other.kill(&id, libc::SIGTERM, false).unwrap();
    // sleep as pid 1 ignores SIGTERM without a handler: use SIGKILL.
    other.kill(&id, libc::SIGKILL, false).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert_eq!(other.state(&id).unwrap().status, Status::Stopped);
    assert_eq!(
        other.kill(&id, libc::SIGKILL, false).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    other.delete(&id, false).unwrap();
    assert_eq!(other.state(&id).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!env.runtime.root().join(&id).exists());
    assert_no_cgroup(&cg);
}

#[test]
fn delete_of_created_container_kills_init() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("created-del");
    let cg = unique("cg");
    let bundle = env.bundle(&id, &spec(&["true"], &cg));
    let init = env.create(&id, &bundle);
    env.runtime.delete(&id, false).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert_no_cgroup(&cg);
}

#[test]
fn force_delete_of_running_container() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("force");
    let cg = unique("cg");
    // A process tree: the shell and two sleeps.
    let bundle = env.bundle(
        &id,
        &spec(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"], &cg),
    );
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();
    wait_for("three processes", || {
        env.runtime.pids(&id).unwrap().len() == 3
    });
    let pids = env.runtime.pids(&id).unwrap();
    assert!(pids.contains(&init.pid()));
    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    for p in pids {
        wait_for("process gone", || {
            !alive(p) || berth_runtime_state_is_zombie(p)
        });
    }
    assert_eq!(
        env.runtime.state(&id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_no_cgroup(&cg);
}

fn berth_runtime_state_is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn kill_all_signals_every_process() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("killall");
    let bundle = env.bundle(
        &id,
        &spec(
            &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
            &unique("cg"),
        ),
    );
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();
    wait_for("three processes", || {
        env.runtime.pids(&id).unwrap().len() == 3
    });
    env.runtime.kill(&id, libc::SIGKILL, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    wait_for("empty cgroup", || env.runtime.pids(&id).unwrap().is_empty());
    env.runtime.delete(&id, false).unwrap();
}

#[test]
fn exec_joins_namespaces_and_cgroup() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("exec");
    let bundle = env.bundle(&id, &spec(&["sleep", "1000"], &unique("cg")));
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();

    let p = process_builder(&[
        "sh",
        "-c",
        "read go; hostname; cat /proc/1/comm; echo $$; readlink /proc/self/ns/pid; pwd; id -u",
    ])
    .cwd("/tmp")
    .build()
    .unwrap();
    let (stdin_r, stdin_w) = pipe();
    let (child, r) = env.exec_piped_with(
        &id,
        &p,
        ExecOptions {
            stdin: Stdio::Fd(stdin_r),
            ..Default::default()
        },
    );
    // The exec'd process is in the container's cgroup while it runs (it
    // waits for a line on stdin).
    let pids = env.runtime.pids(&id).unwrap();
    assert!(pids.contains(&child.pid()), "{pids:?}");
    assert!(pids.contains(&init.pid()), "{pids:?}");
    {
        use std::io::Write;
        std::fs::File::from(stdin_w).write_all(b"go\n").unwrap();
    }
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    let out = read_all(r);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "berth-test");
    assert_eq!(lines[1], "sleep");
    assert_ne!(lines[2], "1", "exec'd shell is not pid 1");
    let init_pidns = std::fs::read_link(format!("/proc/{}/ns/pid", init.pid())).unwrap();
    assert_eq!(lines[3], init_pidns.to_str().unwrap());
    assert_eq!(lines[4], "/tmp");
    assert_eq!(lines[5], "0");

    // A missing program is reported as the Exec step, naming it.
    let bad = process_builder(&["/bin/no-such-program"]).build().unwrap();
    let e = env
        .runtime
        .exec(&id, &bad, ExecOptions::default())
        .unwrap_err();
    match &e {
        berth_runtime::Error::Child { step, path, .. } => {
            assert_eq!(*step, Step::Exec);
            assert_eq!(path.as_deref(), Some("/bin/no-such-program"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(e.kind(), ErrorKind::NotFound);

    env.runtime.kill(&id, libc::SIGKILL, false).unwrap();
    init.wait().unwrap();
    env.runtime.delete(&id, false).unwrap();
}

#[test]
fn pause_and_resume_freeze_the_container() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("pause");
    let bundle = env.bundle(&id, &spec(&["sleep", "1000"], &unique("cg")));
    let init = env.create(&id, &bundle);
    assert_eq!(
        env.runtime.pause(&id).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    env.runtime.start(&id).unwrap();
    env.runtime.pause(&id).unwrap();
    let st = env.runtime.state(&id).unwrap();
    assert_eq!(st.status, Status::Paused);
    assert_eq!(
        serde_json::to_value(st.to_oci()).unwrap()["status"],
        "paused"
    );
    let freezer = st.cgroup_paths().v1.get("freezer").cloned();
    if let Some(f) = freezer {
        assert_eq!(
            std::fs::read_to_string(f.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN"
        );
    }
    // Frozen processes cannot be paused twice.
    assert_eq!(
        env.runtime.pause(&id).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    env.runtime.resume(&id).unwrap();
    assert_eq!(env.runtime.state(&id).unwrap().status, Status::Running);
    assert_eq!(
        env.runtime.resume(&id).unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    // Force-deleting a paused container works too.
    env.runtime.pause(&id).unwrap();
    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
}

#[test]
fn two_containers_at_once() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let a = env.id("two-a");
    let b = env.id("two-b");
    let ba = env.bundle(&a, &spec(&["sleep", "1000"], &unique("cg")));
    let bb = env.bundle(&b, &spec(&["sleep", "1000"], &unique("cg")));
    let ia = env.create(&a, &ba);
    let ib = env.create(&b, &bb);
    env.runtime.start(&a).unwrap();
    env.runtime.start(&b).unwrap();
    assert_ne!(ia.pid(), ib.pid());
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(ns(ia.pid()), ns(ib.pid()));
    assert_eq!(env.runtime.pids(&a).unwrap(), vec![ia.pid()]);
    assert_eq!(env.runtime.pids(&b).unwrap(), vec![ib.pid()]);
    let mut ids = env.runtime.list().unwrap();
    ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids, want);
    env.runtime.delete(&a, true).unwrap();
    assert_eq!(env.runtime.state(&b).unwrap().status, Status::Running);
    env.runtime.delete(&b, true).unwrap();
    ia.wait().unwrap();
    ib.wait().unwrap();
}

#[test]
fn ids_are_validated_and_unique() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("dup");
    let bundle = env.bundle(&id, &spec(&["true"], &unique("cg")));
    let init = env.create(&id, &bundle);
    assert_eq!(
        env.runtime
            .create(&id, &bundle, CreateOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    for bad in ["../escape", "a/b", "", ".."] {
        assert_eq!(
            env.runtime
                .create(bad, &bundle, CreateOptions::default())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
    }
    env.runtime.delete(&id, false).unwrap();
    init.wait().unwrap();
}

#[test]
fn failed_start_reports_exec_error_and_stops() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("badexec");
    let cg = unique("cg");
    let bundle = env.bundle(&id, &spec(&["/bin/does-not-exist"], &cg));
    let init = env.create(&id, &bundle);
    let e = env.runtime.start(&id).unwrap_err();
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::Exec, path: Some(p), .. } if p == "/bin/does-not-exist"),
        "{e}"
    );
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(1));
    assert_eq!(env.runtime.state(&id).unwrap().status, Status::Stopped);
    env.runtime.delete(&id, false).unwrap();
    assert_no_cgroup(&cg);
}

/// A create failure leaves no state dir, cgroup or process.
fn assert_create_fails_clean(
    env: &Env,
    tag: &str,
    s: oci_spec::runtime::Spec,
    cg: &str,
) -> berth_runtime::Error {
    let id = env.id(tag);
    let bundle = env.bundle(&id, &s);
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(
        !env.runtime.root().join(&id).exists(),
        "state dir left behind: {e}"
    );
    assert_no_cgroup(cg);
    e
}

#[test]
fn setup_failures_name_step_and_path_and_leave_nothing() {
    if !privileged() {
        return;
    }
    let env = Env::new();

    // A bad cwd.
    let cg = unique("cg");
    let mut s = spec(&["true"], &cg);
    let mut p = s.process().clone().unwrap();
    p.set_cwd("/nonexistent/dir".into());
    s.set_process(Some(p));
    let e = assert_create_fails_clean(&env, "badcwd", s, &cg);
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::Chdir, path: Some(p), .. } if p == "/nonexistent/dir"),
        "{e}"
    );

    // A mount of an unknown filesystem type.
    let cg = unique("cg");
    let mut s = spec(&["true"], &cg);
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/mnt/bogus")
            .typ("no-such-fs")
            .source("none")
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let e = assert_create_fails_clean(&env, "badmount", s, &cg);
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::Mount, path: Some(p), .. } if p == "/mnt/bogus"),
        "{e}"
    );

    // A symlinked /proc in the rootfs is refused before anything starts.
    let cg = unique("cg");
    let id = env.id("symproc");
    let bundle = env.bundle(&id, &spec(&["true"], &cg));
    std::fs::remove_dir(bundle.join("rootfs/proc")).unwrap();
    std::os::unix::fs::symlink("/tmp", bundle.join("rootfs/proc")).unwrap();
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("ordinary directory"), "{e}");
    assert!(!env.runtime.root().join(&id).exists());
    assert_no_cgroup(&cg);

    // A symlinked /sys is refused too.
    let cg = unique("cg");
    let id = env.id("symsys");
    let bundle = env.bundle(&id, &spec(&["true"], &cg));
    std::fs::remove_dir(bundle.join("rootfs/sys")).unwrap();
    std::os::unix::fs::symlink("/", bundle.join("rootfs/sys")).unwrap();
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // A symlinked /dev is refused too (the mount and the device nodes
    // would otherwise follow it), and nothing is created where it points.
    let cg = unique("cg");
    let id = env.id("symdev");
    let bundle = env.bundle(&id, &spec(&["true"], &cg));
    std::fs::remove_dir(bundle.join("rootfs/dev")).unwrap();
    std::os::unix::fs::symlink("/tmp", bundle.join("rootfs/dev")).unwrap();
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::ResolveMountTarget, path: Some(p), source } if p == "/dev" && source.raw_os_error() == Some(libc::ELOOP)),
        "{e}"
    );
    assert!(!bundle.join("rootfs/tmp/null").exists());
    assert!(!env.runtime.root().join(&id).exists());
    assert_no_cgroup(&cg);

    // An AppArmor profile on a host without AppArmor.
    if !Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        let cg = unique("cg");
        let mut s = spec(&["true"], &cg);
        let mut p = s.process().clone().unwrap();
        p.set_apparmor_profile(Some("berth-default".into()));
        s.set_process(Some(p));
        let e = assert_create_fails_clean(&env, "apparmor", s, &cg);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
}

#[test]
fn mount_targets_cannot_escape_through_symlinks() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("escape");
    let leaf = format!("target-{id}");
    let cg = unique("cg");
    let mut s = spec(&["ls", "/tmp"], &cg);
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination(format!("/escape/{leaf}"))
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let bundle = env.bundle(&id, &s);
    // /escape -> /tmp: followed on the host it would mean the host's /tmp.
    std::os::unix::fs::symlink("/tmp", bundle.join("rootfs/escape")).unwrap();
    let (init, r) = env.create_piped(&id, &bundle);
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    // The mount point was created inside the rootfs's /tmp, not the host's.
    assert_eq!(read_all(r), format!("{leaf}\n"));
    assert!(!Path::new("/tmp").join(&leaf).exists());
    assert!(bundle.join("rootfs/tmp").join(&leaf).is_dir());
    env.runtime.delete(&id, false).unwrap();

    // A symlink to a host-only path dangles inside the root: refused, and
    // nothing is created on the host.
    let id = env.id("escape2");
    let host_dir = env.dir.path().join(format!("{id}-host"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let cg = unique("cg");
    let mut s = spec(&["true"], &cg);
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/escape/target")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    let bundle = env.bundle(&id, &s);
    std::os::unix::fs::symlink(&host_dir, bundle.join("rootfs/escape")).unwrap();
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::ResolveMountTarget, path: Some(p), .. } if p == "/escape/target"),
        "{e}"
    );
    assert!(!host_dir.join("target").exists());
    assert_no_cgroup(&cg);
}

#[test]
fn invalid_config_is_refused_with_every_problem() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("badconfig");
    let bundle = env.bundle(&id, &spec(&["true"], &unique("cg")));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    v["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_ADMN"]);
    v["process"]["cwd"] = serde_json::json!("relative/dir");
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let msg = e.to_string();
    assert!(
        msg.contains("CAP_SYS_ADMN") && msg.contains("process.cwd"),
        "{msg}"
    );
    assert!(!env.runtime.root().join(&id).exists());
}

#[test]
fn run_is_create_plus_start_and_cleans_up_on_failure() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("run");
    let (r, w) = pipe();
    let bundle = env.bundle(&id, &spec(&["echo", "ran"], &unique("cg")));
    let init = env
        .runtime
        .run(
            &id,
            &bundle,
            CreateOptions {
                stdout: Stdio::Fd(w),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r), "ran\n");
    env.runtime.delete(&id, false).unwrap();

    let id = env.id("run-fail");
    let cg = unique("cg");
    let bundle = env.bundle(&id, &spec(&["/nope"], &cg));
    let e = env
        .runtime
        .run(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            berth_runtime::Error::Child {
                step: Step::Exec,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        env.runtime.state(&id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_no_cgroup(&cg);
}

#[test]
fn a_busy_cgroup_is_refused_and_left_alone() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let cg = unique("cg");
    let a = env.id("cg-owner");
    let ba = env.bundle(&a, &spec(&["sleep", "1000"], &cg));
    let ia = env.create(&a, &ba);
    let b = env.id("cg-intruder");
    let bb = env.bundle(&b, &spec(&["true"], &cg));
    let e = env
        .runtime
        .create(&b, &bb, CreateOptions::default())
        .unwrap_err();
    assert!(matches!(e, berth_runtime::Error::CgroupBusy { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    // The owner is untouched.
    assert_eq!(env.runtime.pids(&a).unwrap(), vec![ia.pid()]);
    assert_eq!(env.runtime.state(&a).unwrap().status, Status::Created);
    env.runtime.delete(&a, false).unwrap();
    ia.wait().unwrap();
    assert_no_cgroup(&cg);
}
