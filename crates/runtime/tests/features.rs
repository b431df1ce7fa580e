//! Less common spec features: terminals through a console socket, joined
//! namespaces, time namespaces, exec into a user namespace, rootfs
//! propagation, cgroup mounts, spec devices (youki contest groups
//! ns_itype, time_ns, rootfs_propagation, devices, exec).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;

use berth_runtime::oci_spec::runtime::{
    BoxBuilder, LinuxDeviceBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, LinuxTimeOffsetBuilder, MountBuilder,
};
use berth_runtime::{CreateOptions, ExitStatus};
use common::*;

#[test]
fn terminal_master_arrives_on_the_console_socket() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("tty");
    let sock_path = env.dir.path().join(format!("{id}.console"));
    let listener = UnixListener::bind(&sock_path).unwrap();
    let mut s = spec(
        &[
            "sh",
            "-c",
            "tty; stty size; [ -t 0 ] && [ -t 1 ] && echo is-a-tty",
        ],
        &unique("cg"),
    );
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    p.set_console_size(Some(
        BoxBuilder::default()
            .height(40u64)
            .width(120u64)
            .build()
            .unwrap(),
    ));
    s.set_process(Some(p));
    let bundle = env.bundle(&id, &s);
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        berth_runtime::console::recv_pty_master(&stream).unwrap()
    });
    let init = env
        .runtime
        .create(
            &id,
            &bundle,
            CreateOptions {
                console_socket: Some(sock_path),
                ..Default::default()
            },
        )
        .unwrap();
    let master = receiver.join().unwrap();
    env.runtime.start(&id).unwrap();
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    // Reading the master ends with EIO once the slave side is gone.
    let mut buf = [0u8; 256];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out, "/dev/pts/0\r\n40 120\r\nis-a-tty\r\n");
    env.runtime.delete(&id, false).unwrap();

    // Without a console socket a terminal is refused before anything starts.
    let id = env.id("tty-nosock");
    let mut s = spec(&["true"], &unique("cg"));
    let mut p = s.process().clone().unwrap();
    p.set_terminal(Some(true));
    s.set_process(Some(p));
    let bundle = env.bundle(&id, &s);
    let e = env
        .runtime
        .create(&id, &bundle, CreateOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), berth_runtime::ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn namespaces_joined_by_path() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let a = env.id("ns-owner");
    let ba = env.bundle(&a, &spec(&["sleep", "1000"], &unique("cg")));
    let ia = env.create(&a, &ba);
    env.runtime.start(&a).unwrap();

    use LinuxNamespaceType::*;
    let mut ns = namespaces(&[Pid, Ipc, Uts, Mount, Cgroup]);
    for (t, name) in [(Network, "net"), (Ipc, "ipc"), (Pid, "pid")] {
        ns.retain(|n| n.typ() != t);
        ns.push(
            LinuxNamespaceBuilder::default()
                .typ(t)
                .path(format!("/proc/{}/ns/{name}", ia.pid()))
                .build()
                .unwrap(),
        );
    }
    let linux = linux_builder(&unique("cg")).namespaces(ns).build().unwrap();
    let s = spec_builder(
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; \
             cat /proc/1/comm",
        ],
        &unique("cg"),
    )
    .linux(linux)
    .build()
    .unwrap();
    let (st, out, err) = env.run("ns-joiner", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let link = |n: &str| {
        std::fs::read_link(format!("/proc/{}/ns/{n}", ia.pid()))
            .unwrap()
            .display()
            .to_string()
    };
    // Joined pid namespace: the owner's `sleep` is pid 1 there.
    let want = format!("{}\n{}\n{}\nsleep\n", link("net"), link("ipc"), link("pid"));
    assert_eq!(out, want);
    env.runtime.delete(&a, true).unwrap();
    ia.wait().unwrap();
}

#[test]
fn time_namespace_offsets() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI kernel lacks time namespaces"
        );
        eprintln!("skipping: no time namespaces");
        return;
    }
    let env = Env::new();
    use LinuxNamespaceType::*;
    let mut offsets = std::collections::HashMap::new();
    offsets.insert(
        "boottime".to_string(),
        LinuxTimeOffsetBuilder::default()
            .secs(10_000_000i64)
            .nanosecs(0u32)
            .build()
            .unwrap(),
    );
    let linux = linux_builder(&unique("cg"))
        .namespaces(namespaces(&[Pid, Network, Ipc, Uts, Mount, Cgroup, Time]))
        .time_offsets(offsets)
        .build()
        .unwrap();
    let s = spec_builder(&["sh", "-c", "cut -d. -f1 /proc/uptime"], &unique("cg"))
        .linux(linux)
        .build()
        .unwrap();
    let (st, out, err) = env.run("timens", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let inside: u64 = out.trim().parse().unwrap();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        inside >= 10_000_000 + host as u64 - 5,
        "uptime {inside} vs host {host}"
    );
}

#[test]
fn exec_into_a_user_namespace_container() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let linux = userns_linux(&unique("cg"), 300_000);
    let id = env.id("userns-exec");
    let bundle = env.bundle(
        &id,
        &spec_builder(&["sleep", "1000"], &unique("cg"))
            .linux(linux)
            .build()
            .unwrap(),
    );
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();
    let p = process_builder(&[
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map | tr -s ' '; hostname",
    ])
    .build()
    .unwrap();
    let (child, r) = env.exec_piped(&id, &p);
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r), "0\n 0 300000 65536\nberth-test\n");
    // From the host, the exec'd process ran as the mapped uid.
    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
}

#[test]
fn rootfs_propagation_private_and_shared() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    for (prop, want_shared) in [("private", false), ("rshared", true)] {
        let linux = linux_builder(&unique("cg"))
            .rootfs_propagation(prop)
            .build()
            .unwrap();
        let s = spec_builder(
            &["awk", "$5 == \"/\"", "/proc/self/mountinfo"],
            &unique("cg"),
        )
        .linux(linux)
        .build()
        .unwrap();
        let (st, out, err) = env.run(&format!("prop-{prop}"), s);
        assert_eq!(st, ExitStatus::Exited(0), "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(out.contains(" shared:"), want_shared, "{prop}: {out}");
        assert!(!out.contains(" master:"), "{prop}: {out}");
    }
}

#[test]
fn cgroup_mount_shows_the_containers_own_cgroup() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let limit = 48 * 1024 * 1024i64;
    let mut mounts = default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "relatime".into(),
                "ro".into(),
            ])
            .build()
            .unwrap(),
    );
    let linux = linux_builder(&unique("cg"))
        .resources(
            LinuxResourcesBuilder::default()
                .memory(LinuxMemoryBuilder::default().limit(limit).build().unwrap())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let script = if berth_runtime::cgroups::is_unified() {
        "cat /sys/fs/cgroup/memory.max; cat /proc/self/cgroup"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; grep memory /proc/self/cgroup; \
         touch /sys/fs/cgroup/memory/x 2>/dev/null && echo writable || echo ro"
    };
    let s = spec_builder(&["sh", "-c", script], &unique("cg"))
        .mounts(mounts)
        .linux(linux)
        .build()
        .unwrap();
    let (st, out, err) = env.run("cgmount", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], limit.to_string());
    // Inside its cgroup namespace the container is at the root.
    assert!(lines[1].ends_with(":/"), "{out}");
    if !berth_runtime::cgroups::is_unified() {
        assert_eq!(lines[2], "ro");
    }
}

#[test]
fn spec_devices_are_created_with_owner_and_mode() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let dev = LinuxDeviceBuilder::default()
        .path("/dev/custom/mynull")
        .typ(LinuxDeviceType::C)
        .major(1i64)
        .minor(3i64)
        .file_mode(0o620u32)
        .uid(1000u32)
        .gid(1001u32)
        .build()
        .unwrap();
    let linux = linux_builder(&unique("cg"))
        .devices(vec![dev])
        .build()
        .unwrap();
    let s = spec_builder(
        &["sh", "-c", "stat -c '%F %a %u %g %t %T' /dev/custom/mynull; echo x > /dev/custom/mynull && echo ok"],
        &unique("cg"),
    )
    .linux(linux)
    .build()
    .unwrap();
    let (st, out, err) = env.run("devices", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "character special file 620 1000 1001 1 3\nok\n");
}

#[test]
fn exec_into_a_container_without_proc() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("noproc");
    let mounts: Vec<_> = default_mounts()
        .into_iter()
        .filter(|m| m.destination() != std::path::Path::new("/proc"))
        .collect();
    let mut linux = linux_builder(&unique("cg")).build().unwrap();
    // Masked/read-only paths under /proc do not exist without it (skipped).
    linux.set_sysctl(None);
    let s = spec_builder(&["sleep", "1000"], &unique("cg"))
        .mounts(mounts)
        .linux(linux)
        .build()
        .unwrap();
    let bundle = env.bundle(&id, &s);
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();
    let p = process_builder(&["sh", "-c", "ls /proc | wc -l; echo exec-ok"])
        .build()
        .unwrap();
    let (child, r) = env.exec_piped(&id, &p);
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r), "0\nexec-ok\n");
    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
}

#[test]
fn containers_get_their_own_session_keyring() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/proc/keys").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI kernel lacks keyrings");
        eprintln!("skipping: no keyrings");
        return;
    }
    let env = Env::new();
    let keys = || std::fs::read_to_string("/proc/keys").unwrap();
    for no_new_keyring in [false, true] {
        let id = env.id(if no_new_keyring {
            "nokeyring"
        } else {
            "keyring"
        });
        let bundle = env.bundle(&id, &spec(&["sleep", "1000"], &unique("cg")));
        let init = env
            .runtime
            .create(
                &id,
                &bundle,
                CreateOptions {
                    no_new_keyring,
                    ..Default::default()
                },
            )
            .unwrap();
        env.runtime.start(&id).unwrap();
        let name = format!("_ses.{id}");
        assert_eq!(
            keys().contains(&name),
            !no_new_keyring,
            "{name} in /proc/keys"
        );
        env.runtime.delete(&id, true).unwrap();
        init.wait().unwrap();
    }
}

#[test]
fn bind_mounts_read_only_and_of_single_files() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("binds");
    let host = env.dir.path().join(format!("{id}-host"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("data"), "from-host\n").unwrap();
    let file = env.dir.path().join(format!("{id}-file"));
    std::fs::write(&file, "single-file\n").unwrap();
    let mut mounts = default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/mnt/ro")
            .typ("bind")
            .source(host.clone())
            .options(vec![
                "rbind".to_string(),
                "ro".to_string(),
                "nosuid".to_string(),
            ])
            .build()
            .unwrap(),
    );
    mounts.push(
        MountBuilder::default()
            .destination("/etc/injected.conf")
            .typ("bind")
            .source(file.clone())
            .options(vec!["bind".to_string()])
            .build()
            .unwrap(),
    );
    let s = spec_builder(
        &[
            "sh",
            "-c",
            "cat /mnt/ro/data; touch /mnt/ro/new 2>/dev/null && echo writable || echo ro; \
             grep ' /mnt/ro ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1,2; cat /etc/injected.conf",
        ],
        &unique("cg"),
    )
    .mounts(mounts)
    .build()
    .unwrap();
    let (st, out, err) = env.run("binds", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "from-host\nro\nro,nosuid\nsingle-file\n");
    assert!(!host.join("new").exists());
}
