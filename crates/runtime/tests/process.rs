//! What the spec asks of the container process, checked from inside a
//! busybox container (youki contest groups: process, process_user,
//! process_capabilities, process_rlimits, process_oom_score_adj, seccomp,
//! fd_control, set_host_name, domainname_test, sysctl, …).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::os::fd::AsRawFd;

use berth_runtime::ExitStatus;
use berth_runtime::oci_spec::runtime::{
    LinuxCapabilitiesBuilder, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscallBuilder, UserBuilder,
};
use common::*;

fn sh_spec(script: &str) -> oci_spec::runtime::SpecBuilder {
    spec_builder(&["sh", "-c", script], &unique("cg"))
}

#[test]
fn hostname_env_and_cwd() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let mut p = process_builder(&["sh", "-c", "hostname; echo $BERTH_TEST; pwd"])
        .build()
        .unwrap();
    p.set_cwd("/tmp".into());
    let s = sh_spec("").process(p).build().unwrap();
    let (st, out, err) = env.run("hostenv", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "berth-test\nhello\n/tmp\n");
}

#[test]
fn domainname_and_sysctl() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let mut linux = linux_builder(&unique("cg")).build().unwrap();
    let mut sysctl = std::collections::HashMap::new();
    sysctl.insert("kernel.shmmax".to_string(), "123456789".to_string());
    sysctl.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
    linux.set_sysctl(Some(sysctl));
    let s = sh_spec(
        "cat /proc/sys/kernel/domainname /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward",
    )
    .domainname("berth.example")
    .linux(linux)
    .build()
    .unwrap();
    let (st, out, err) = env.run("sysctl", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "berth.example\n123456789\n1\n");
    // The host's values are untouched (the sysctls are namespaced).
    let host_fwd = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    assert_ne!(host_fwd.trim(), "123456789");
}

#[test]
fn namespaces_differ_from_host() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let names = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let script = names
        .iter()
        .map(|n| format!("readlink /proc/self/ns/{n}"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = env.sh(
        "ns",
        &format!("{script}; readlink /proc/self/ns/user; echo pid=$$"),
    );
    let lines: Vec<&str> = out.lines().collect();
    for (i, n) in names.iter().enumerate() {
        let host = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert_ne!(
            lines[i],
            host.to_str().unwrap(),
            "{n} namespace is the host's"
        );
    }
    // No user namespace asked for: the host's is shared.
    let host_user = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_eq!(lines[names.len()], host_user.to_str().unwrap());
    // The shell is pid 1 of the new pid namespace.
    assert_eq!(lines[names.len() + 1], "pid=1");
}

#[test]
fn standard_mounts_devices_and_links() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let out = env.sh(
        "mounts",
        "grep -E ' /(proc|dev|dev/pts|dev/shm|dev/mqueue|sys) ' /proc/mounts | cut -d' ' -f2,3 | sort; \
         for d in null zero full random urandom tty; do [ -c /dev/$d ] && echo $d; done; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; \
         grep ' /sys ' /proc/mounts | grep -c ' ro,'",
    );
    let expected = "/dev tmpfs\n/dev/mqueue mqueue\n/dev/pts devpts\n/dev/shm tmpfs\n/proc proc\n/sys sysfs\n\
         null\nzero\nfull\nrandom\nurandom\ntty\n4\nnull-ok\n\
         /proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\npts/ptmx\n1\n";
    assert_eq!(out, expected);
}

#[test]
fn masked_and_readonly_paths() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    // /proc/keys (a file) and /sys/firmware (a directory) exist on this
    // kernel; /proc/kcore (in the default list) may not, and is skipped.
    assert!(std::path::Path::new("/proc/keys").exists());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().count() > 0);
    let out = env.sh(
        "masked",
        "wc -c < /proc/keys; ls -A /sys/firmware | wc -l; \
         grep -E ' /proc/(sys|keys|bus) ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1 | sort; \
         echo x 2>/dev/null > /proc/sys/kernel/hostname && echo writable || echo refused",
    );
    assert_eq!(
        out,
        "0\n0\n/proc/bus ro\n/proc/keys rw\n/proc/sys ro\nrefused\n"
    );
}

#[test]
fn capabilities_all_sets() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let out = env.sh(
        "caps",
        "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status",
    );
    let mut expected = 0u64;
    for n in [29, 0, 1, 3, 4, 5, 27, 10, 13, 31, 6, 8, 7, 18] {
        expected |= 1 << n;
    }
    let e = format!("{expected:016x}");
    assert_eq!(
        out,
        format!(
            "CapInh:\t0000000000000000\nCapPrm:\t{e}\nCapEff:\t{e}\nCapBnd:\t{e}\nCapAmb:\t0000000000000000\n"
        )
    );
}

#[test]
fn ambient_capabilities_survive_a_uid_switch() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    use berth_runtime::oci_spec::runtime::Capability;
    let set: oci_spec::runtime::Capabilities = [Capability::NetBindService, Capability::Kill]
        .into_iter()
        .collect();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set.clone())
        .inheritable(set.clone())
        .ambient(set)
        .build()
        .unwrap();
    let mut p = process_builder(&[
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Amb)' /proc/self/status; id -u",
    ])
    .build()
    .unwrap();
    p.set_capabilities(Some(caps));
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1000u32)
            .build()
            .unwrap(),
    );
    let (st, out, err) = env.run("ambient", sh_spec("").process(p).build().unwrap());
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    let want = format!("{:016x}", (1u64 << 10) | (1u64 << 5));
    assert_eq!(out, format!("CapEff:\t{want}\nCapAmb:\t{want}\n1000\n"));
}

#[test]
fn user_groups_umask_rlimits_nnp_oom() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let mut p = process_builder(&[
        "sh",
        "-c",
        "grep -E '^(Uid|Gid|Groups|NoNewPrivs)' /proc/self/status | tr -s '\\t ' ' '; umask; ulimit -n; \
         cat /proc/self/oom_score_adj",
    ])
    .oom_score_adj(500)
    .build()
    .unwrap();
    p.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1001u32)
            .additional_gids(vec![10u32, 20u32])
            .umask(0o027u32)
            .build()
            .unwrap(),
    );
    let (st, out, err) = env.run("user", sh_spec("").process(p).build().unwrap());
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(
        out,
        "Uid: 1000 1000 1000 1000\nGid: 1001 1001 1001 1001\nGroups: 10 20 \nNoNewPrivs: 1\n0027\n1024\n500\n"
    );
}

#[test]
fn rlimit_above_hard_limit_fails_with_step() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    use berth_runtime::oci_spec::runtime::{PosixRlimitBuilder, PosixRlimitType};
    let mut p = process_builder(&["true"]).build().unwrap();
    // Raising the hard limit needs CAP_SYS_RESOURCE, which this host's root lacks.
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: cur is a valid out-parameter.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let can_raise = caps_effective_has(24); // CAP_SYS_RESOURCE
    p.set_rlimits(Some(vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(cur.rlim_max + 1)
            .hard(cur.rlim_max + 1)
            .build()
            .unwrap(),
    ]));
    let id = env.id("rlimitfail");
    let bundle = env.bundle(&id, &sh_spec("").process(p).build().unwrap());
    let r = env.runtime.create(&id, &bundle, Default::default());
    if can_raise {
        r.unwrap();
        return;
    }
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            berth_runtime::Error::Child {
                step: berth_runtime::Step::Rlimit,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        env.runtime.state(&id).unwrap_err().kind(),
        berth_runtime::ErrorKind::NotFound
    );
}

fn caps_effective_has(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let v = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
    v & (1 << cap) != 0
}

#[test]
fn seccomp_denies_with_errno_and_arg_conditions() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let profile = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EACCES as u32)
                .build()
                .unwrap(),
            // personality(0xffffffff) (a query) is refused; other values pass.
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(0x1234u64)
                        .op(LinuxSeccompOperator::ScmpCmpEq)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let mut linux = linux_builder(&unique("cg")).build().unwrap();
    linux.set_seccomp(Some(profile));
    let s = sh_spec("mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/y && echo touch-ok; grep Seccomp: /proc/self/status")
        .linux(linux)
        .build()
        .unwrap();
    let (st, out, err) = env.run("seccomp", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("rc=1\ntouch-ok\nSeccomp:\t2\n"), "{out}");
}

#[test]
fn only_stdio_fds_reach_the_container() {
    if !privileged() {
        return;
    }
    // A non-close-on-exec fd in the runtime's process must not leak.
    let leak = std::fs::File::open("/").unwrap();
    // SAFETY: dup of an fd we own; the copy is inheritable on purpose.
    let leaked = unsafe { libc::dup(leak.as_raw_fd()) };
    assert!(leaked > 2);
    let env = Env::new();
    // `ls` itself is the container process: fd 3 is the directory it reads.
    let (st, out, err) = env.run("fds", spec(&["ls", "/proc/self/fd"], &unique("cg")));
    // SAFETY: closing our own dup.
    unsafe { libc::close(leaked) };
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "0\n1\n2\n3\n");
}

#[test]
fn preserved_fds_arrive_in_order() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let id = env.id("preserve");
    let bundle = env.bundle(&id, &spec(&["ls", "/proc/self/fd"], &unique("cg")));
    let (_r3, w3) = pipe();
    let (_r4, w4) = pipe();
    let (init, ro) = env.create_piped_with(
        &id,
        &bundle,
        berth_runtime::CreateOptions {
            preserve_fds: vec![w3, w4],
            ..Default::default()
        },
    );
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    // 3 and 4 are the preserved fds, 5 is the directory `ls` reads.
    assert_eq!(read_all(ro), "0\n1\n2\n3\n4\n5\n");
    env.runtime.delete(&id, false).unwrap();

    // And data written to them arrives in order.
    let id = env.id("preserve-data");
    let bundle = env.bundle(
        &id,
        &spec(
            &["sh", "-c", "echo three >&3; echo four >&4"],
            &unique("cg"),
        ),
    );
    let (r3, w3) = pipe();
    let (r4, w4) = pipe();
    let init = env
        .runtime
        .create(
            &id,
            &bundle,
            berth_runtime::CreateOptions {
                preserve_fds: vec![w3, w4],
                ..Default::default()
            },
        )
        .unwrap();
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r3), "three\n");
    assert_eq!(read_all(r4), "four\n");
    env.runtime.delete(&id, false).unwrap();
}

#[test]
fn readonly_root_and_no_pivot() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let mut s = sh_spec("touch /newfile 2>/dev/null && echo writable || echo readonly; touch /tmp/../dev/shm/ok && echo shm-ok")
        .build()
        .unwrap();
    let mut root = s.root().clone().unwrap();
    root.set_readonly(Some(true));
    s.set_root(Some(root));
    let (st, out, err) = env.run("rofs", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "readonly\nshm-ok\n");

    let id = env.id("nopivot");
    let bundle = env.bundle(
        &id,
        &spec(
            &[
                "sh",
                "-c",
                "cat /proc/self/mountinfo | wc -l; ls /bin/busybox",
            ],
            &unique("cg"),
        ),
    );
    let (init, ro) = env.create_piped_with(
        &id,
        &bundle,
        berth_runtime::CreateOptions {
            no_pivot: true,
            ..Default::default()
        },
    );
    env.runtime.start(&id).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    assert!(read_all(ro).ends_with("/bin/busybox\n"));
    env.runtime.delete(&id, false).unwrap();
}

#[test]
fn user_namespace_with_mappings() {
    if !privileged() {
        return;
    }
    let env = Env::new();
    let linux = userns_linux(&unique("cg"), 200_000);
    let s = sh_spec(
        "id -u; cat /proc/self/uid_map | tr -s ' '; [ -c /dev/null ] && echo dev-ok; hostname",
    )
    .linux(linux)
    .build()
    .unwrap();
    let (st, out, err) = env.run("userns", s);
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "0\n 0 200000 65536\ndev-ok\nberth-test\n");
}

#[test]
fn leaked_fd_cwd_cannot_reach_the_host() {
    if !privileged() {
        return;
    }
    // CVE-2024-21626: a host directory fd leaked into init plus
    // cwd=/proc/self/fd/N would give the container a host cwd.
    let host_dir = std::fs::File::open("/").unwrap();
    // SAFETY: dup of an fd we own, deliberately without close-on-exec.
    let leaked = unsafe { libc::dup(host_dir.as_raw_fd()) };
    assert!(leaked > 2);
    let env = Env::new();
    let id = env.id("cwdleak");
    let mut p = process_builder(&["sh", "-c", "pwd; ls"]).build().unwrap();
    p.set_cwd(format!("/proc/self/fd/{leaked}").into());
    let bundle = env.bundle(&id, &sh_spec("").process(p).build().unwrap());
    let r = env.runtime.create(&id, &bundle, Default::default());
    // SAFETY: closing our own dup.
    unsafe { libc::close(leaked) };
    let e = r.unwrap_err();
    assert!(
        matches!(
            &e,
            berth_runtime::Error::Child {
                step: berth_runtime::Step::Chdir | berth_runtime::Step::VerifyCwd,
                ..
            }
        ),
        "{e}"
    );
    assert!(!env.runtime.root().join(&id).exists());
}

#[test]
fn io_priority_and_personality() {
    if !privileged() {
        return;
    }
    use berth_runtime::oci_spec::runtime::{
        IOPriorityClass, LinuxIOPriorityBuilder, LinuxPersonalityBuilder, LinuxPersonalityDomain,
    };
    let env = Env::new();
    let p = process_builder(&["sh", "-c", "ionice; uname -m"])
        .io_priority(
            LinuxIOPriorityBuilder::default()
                .class(IOPriorityClass::IoprioClassBe)
                .priority(6i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let linux = linux_builder(&unique("cg"))
        .personality(
            LinuxPersonalityBuilder::default()
                .domain(LinuxPersonalityDomain::PerLinux32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (st, out, err) = env.run(
        "ioprio",
        sh_spec("").process(p).linux(linux).build().unwrap(),
    );
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "best-effort: prio 6\ni686\n");
}

#[test]
fn scheduler_policy_and_nice() {
    if !privileged() {
        return;
    }
    use berth_runtime::oci_spec::runtime::{LinuxSchedulerPolicy, SchedulerBuilder};
    let env = Env::new();
    // Field 19 of /proc/self/stat is the nice value, field 41 the policy.
    let p = process_builder(&["awk", "{print $19, $41}", "/proc/self/stat"])
        .scheduler(
            SchedulerBuilder::default()
                .policy(LinuxSchedulerPolicy::SchedBatch)
                .nice(7)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (st, out, err) = env.run("sched", sh_spec("").process(p).build().unwrap());
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(out, "7 3\n");
}

#[test]
fn signal_mask_and_dispositions_are_reset() {
    if !privileged() {
        return;
    }
    // The Rust runtime ignores SIGPIPE in this (the runtime's) process;
    // the container must not inherit that, nor a blocked mask.
    let env = Env::new();
    let (st, out, err) = env.run(
        "signals",
        spec(
            &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
            &unique("cg"),
        ),
    );
    assert_eq!(st, ExitStatus::Exited(0), "{err}");
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}
