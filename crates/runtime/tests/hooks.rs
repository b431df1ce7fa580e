//! Hooks (youki contest groups hooks, create_runtime, poststart,
//! poststop, prestart, start_container): state JSON on stdin, order,
//! namespaces they run in, failures, and the pid file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use berth_runtime::oci_spec::runtime::{HookBuilder, HooksBuilder, MountBuilder};
use berth_runtime::{CreateOptions, ExitStatus, Step};
use common::*;

#[test]
fn hooks_run_with_state_and_pid_file_is_written() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("hooks");
    let out = env.dir.path().join(format!("{id}-hooks"));
    std::fs::create_dir_all(&out).unwrap();
    let hook = |name: &str| {
        HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("cat > {}/{name}", out.display()),
            ])
            .build()
            .unwrap()
    };
    let mut s = spec(&["true"], &unique("cg"));
    s.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![hook("createRuntime")])
            .create_container(vec![hook("createContainer")])
            .poststart(vec![hook("poststart")])
            .poststop(vec![hook("poststop")])
            .build()
            .unwrap(),
    ));
    let bundle = env.bundle(&id, &s);
    let pid_file = out.join("pid");
    let init = env
        .runtime
        .create(
            &id,
            &bundle,
            CreateOptions {
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        init.pid().to_string()
    );
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap()
    };
    let cr = read("createRuntime");
    assert_eq!(cr["id"], id.as_str());
    assert_eq!(cr["status"], "creating");
    assert_eq!(cr["pid"], init.pid());
    assert!(out.join("createContainer").exists());
    assert!(!out.join("poststart").exists());
    env.runtime.start(&id).unwrap();
    assert_eq!(read("poststart")["status"], "running");
    init.wait().unwrap();
    env.runtime.delete(&id, false).unwrap();
    assert_eq!(read("poststop")["status"], "stopped");

    // A failing createRuntime hook fails create and cleans up.
    let id = env.id("hookfail");
    let cg = unique("cg");
    let mut s = spec(&["true"], &cg);
    s.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![
                HookBuilder::default().path("/bin/false").build().unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    let bundle = env.bundle(&id, &s);
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            berth_runtime::Error::Hook {
                hook: "createRuntime",
                ..
            }
        ),
        "{e}"
    );
    assert!(!env.runtime.root().join(&id).exists());
    assert_no_cgroup(&cg);
}

#[test]
fn start_container_hooks_run_inside_before_the_program() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("starthook");
    let data = env.dir.path().join(format!("{id}-data"));
    std::fs::create_dir_all(&data).unwrap();
    let mut s = spec(
        &[
            "sh",
            "-c",
            "test -e /data/hooked && echo program-after-hook > /data/program",
        ],
        &unique("cg"),
    );
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(data.clone())
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    s.set_hooks(Some(
        HooksBuilder::default()
            .start_container(vec![
                HookBuilder::default()
                    .path("/bin/sh")
                    .args(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        // Runs in the container: its hostname and root.
                        "cat > /data/hooked; hostname >> /data/hooked".to_string(),
                    ])
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    assert!(!data.join("hooked").exists());
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    let hooked = std::fs::read_to_string(data.join("hooked")).unwrap();
    let (json, host) = hooked
        .split_once('}')
        .map(|(a, b)| (format!("{a}}}"), b))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["pid"], init.pid());
    assert_eq!(host.trim(), "berth-test");
    assert_eq!(
        std::fs::read_to_string(data.join("program")).unwrap(),
        "program-after-hook\n"
    );
    env.runtime.delete(&id, false).unwrap();

    // A failing hook stops the start, naming the hook; the program never runs.
    let id = env.id("starthook-fail");
    let mut s = spec(&["sh", "-c", "echo ran > /data/ran"], &unique("cg"));
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(data.clone())
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap(),
    );
    s.set_mounts(Some(mounts));
    s.set_hooks(Some(
        HooksBuilder::default()
            .start_container(vec![
                HookBuilder::default().path("/bin/false").build().unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    let e = env.runtime.start(&id).unwrap_err();
    assert!(
        matches!(&e, berth_runtime::Error::Child { step: Step::StartContainerHook, path: Some(p), .. } if p == "/bin/false"),
        "{e}"
    );
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(1));
    assert!(!data.join("ran").exists());
    env.runtime.delete(&id, false).unwrap();
}
