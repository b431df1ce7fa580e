//! Tests of runtime-spec validation, on specs built field by field.

use super::*;
use oci_spec::runtime::{
    Capability, HookBuilder, HooksBuilder, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxSeccompAction, LinuxSeccompBuilder,
    LinuxSyscallBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, SpecBuilder, UserBuilder,
};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};
use std::collections::HashSet;

fn ns(t: LinuxNamespaceType) -> oci_spec::runtime::LinuxNamespace {
    LinuxNamespaceBuilder::default().typ(t).build().unwrap()
}

fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .container_id(container)
        .host_id(host)
        .size(size)
        .build()
        .unwrap()
}

/// A small spec that passes every check, built field by field (not from `Spec::default()`).
fn good_spec() -> Spec {
    let mut caps = LinuxCapabilitiesBuilder::default()
        .bounding(
            [Capability::Chown, Capability::NetBindService]
                .into_iter()
                .collect::<HashSet<_>>(),
        )
        .effective([Capability::Chown].into_iter().collect::<HashSet<_>>())
        .build()
        .unwrap();
    // Unset sets would otherwise come from oci-spec's defaults.
    caps.set_inheritable(None);
    caps.set_permitted(None);
    caps.set_ambient(None);
    let process = ProcessBuilder::default()
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .args(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "true".to_owned(),
        ])
        .env(vec!["PATH=/usr/bin:/bin".to_owned(), "EMPTY=".to_owned()])
        .cwd("/")
        .capabilities(caps)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(4096u64)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            ns(LinuxNamespaceType::Pid),
            ns(LinuxNamespaceType::Mount),
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::User),
            ns(LinuxNamespaceType::Network),
        ])
        .uid_mappings(vec![mapping(0, 100_000, 65_536)])
        .gid_mappings(vec![mapping(0, 100_000, 65_536)])
        .masked_paths(vec!["/proc/kcore".to_owned()])
        .readonly_paths(vec!["/proc/sys".to_owned()])
        .sysctl(
            [("net.ipv4.ip_forward".to_owned(), "1".to_owned())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .seccomp(
            LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActErrno)
                .syscalls(vec![
                    LinuxSyscallBuilder::default()
                        .names(vec!["read".to_owned(), "write".to_owned()])
                        .action(LinuxSeccompAction::ScmpActAllow)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut spec = SpecBuilder::default()
        .version("1.1.0")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .unwrap(),
        )
        .hostname("box")
        .mounts(vec![
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap(),
        ])
        .process(process)
        .hooks(
            HooksBuilder::default()
                .create_runtime(vec![
                    HookBuilder::default()
                        .path("/usr/bin/hook")
                        .timeout(5i64)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        )
        .linux(linux)
        .build()
        .unwrap();
    // The builders fill unset fields from oci-spec's non-neutral defaults; clear the ones
    // this spec does not mean to set, so every value under test is chosen here.
    spec.set_annotations(None);
    spec.set_domainname(None);
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(None);
        p.set_selinux_label(None);
    }
    if let Some(l) = spec.linux_mut() {
        l.set_resources(None);
        l.set_devices(None);
        l.set_cgroups_path(None);
    }
    spec
}

fn problems_of(spec: &Spec) -> Vec<String> {
    match validate(spec) {
        Ok(()) => Vec::new(),
        Err(Error::InvalidSpec { problems }) => problems,
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn assert_one_problem(spec: &Spec, needle: &str) {
    let problems = problems_of(spec);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(needle),
        "{problems:?} lacks {needle:?}"
    );
}

#[test]
fn good_spec_passes() {
    let spec = good_spec();
    validate(&spec).unwrap();
    // A spec without process, hooks or linux sections is fine too.
    // (SpecBuilder fills unset fields from the non-neutral Spec::default(): clear them.)
    let mut bare = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path("/bundle/rootfs")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    bare.set_process(None);
    bare.set_linux(None);
    bare.set_mounts(None);
    bare.set_hostname(None);
    bare.set_annotations(None);
    assert!(bare.process().is_none() && bare.linux().is_none());
    validate(&bare).unwrap();
}

#[test]
fn checks_oci_version() {
    for ok in [
        "1.0.0",
        "1.1.0",
        "1.0.2-dev",
        "1.2.0-rc.1+build.5",
        "1.0.0-0.3.7",
        "1.0.0-x-y",
    ] {
        let mut spec = good_spec();
        spec.set_version(ok.to_owned());
        validate(&spec).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, needle) in [
        ("", "SemVer"),
        ("1.0", "SemVer"),
        ("v1.0.0", "SemVer"),
        ("01.0.0", "SemVer"),
        ("1.0.0-", "SemVer"),
        ("1.0.0-01", "SemVer"),
        ("1.0.0+", "SemVer"),
        ("1.0.0-a..b", "SemVer"),
        ("1.0.0.0", "SemVer"),
        ("2.0.0", "major version 2"),
        ("0.9.0", "major version 0"),
    ] {
        let mut spec = good_spec();
        spec.set_version(bad.to_owned());
        assert_one_problem(&spec, needle);
        assert!(problems_of(&spec)[0].starts_with("ociVersion"), "{bad}");
    }
}

#[test]
fn checks_root_and_process() {
    let mut spec = good_spec();
    spec.set_root(None);
    assert_one_problem(&spec, "root: missing");
    let mut spec = good_spec();
    spec.set_root(Some(RootBuilder::default().path("").build().unwrap()));
    assert_one_problem(&spec, "root.path: empty");

    let mut spec = good_spec();
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(Vec::new()));
    }
    assert_one_problem(&spec, "process.args: empty");
    if let Some(p) = spec.process_mut() {
        p.set_args(None);
    }
    assert_one_problem(&spec, "process.args: missing");
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(vec![String::new()]));
    }
    assert_one_problem(&spec, "process.args[0]: empty");

    let mut spec = good_spec();
    if let Some(p) = spec.process_mut() {
        p.set_cwd("relative/dir".into());
    }
    assert_one_problem(&spec, "process.cwd: relative/dir is not an absolute path");

    let mut spec = good_spec();
    if let Some(p) = spec.process_mut() {
        p.set_env(Some(vec!["NOEQUALS".to_owned(), "=value".to_owned()]));
    }
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("process.env[0]") && problems[1].contains("process.env[1]"));
}

#[test]
fn checks_rlimits() {
    let rl = |t, soft: u64, hard: u64| {
        PosixRlimitBuilder::default()
            .typ(t)
            .soft(soft)
            .hard(hard)
            .build()
            .unwrap()
    };
    let mut spec = good_spec();
    if let Some(p) = spec.process_mut() {
        p.set_rlimits(Some(vec![
            rl(PosixRlimitType::RlimitNofile, 10, 10),
            rl(PosixRlimitType::RlimitNofile, 10, 10),
            rl(PosixRlimitType::RlimitCore, 5, 1),
        ]));
    }
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("duplicate RLIMIT_NOFILE"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("soft limit 5 is above hard limit 1"),
        "{problems:?}"
    );
}

#[test]
fn checks_mounts_and_hooks() {
    let mut spec = good_spec();
    spec.set_mounts(Some(vec![
        MountBuilder::default()
            .destination("tmp")
            .typ("tmpfs")
            .build()
            .unwrap(),
        MountBuilder::default().destination("").build().unwrap(),
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/srv")
            .uid_mappings(vec![mapping(0, 1000, 0)])
            .gid_mappings(vec![mapping(0, 1000, 1)])
            .build()
            .unwrap(),
    ]));
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("mounts[0].destination: tmp is not an absolute path"));
    assert!(problems[1].starts_with("mounts[1].destination: empty"));
    assert!(problems[2].starts_with("mounts[2].uidMappings[0].size"));

    let mut spec = good_spec();
    spec.set_hooks(Some(
        HooksBuilder::default()
            .prestart(vec![HookBuilder::default().path("hook").build().unwrap()])
            .poststop(vec![
                HookBuilder::default().path("/ok").build().unwrap(),
                HookBuilder::default()
                    .path("/bin/x")
                    .timeout(0i64)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("hooks.prestart[0].path"));
    assert!(problems[1].starts_with("hooks.poststop[1].timeout"));
}

#[test]
fn checks_namespaces_and_mappings() {
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        let mut joined = ns(LinuxNamespaceType::Network);
        joined.set_path(Some("proc/1/ns/net".into()));
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Pid),
            ns(LinuxNamespaceType::Pid),
            joined,
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::User),
        ]));
    }
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("duplicate namespace type pid"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("linux.namespaces[2].path"),
        "{problems:?}"
    );

    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_uid_mappings(Some(vec![
            mapping(0, 1000, 10),
            mapping(5, 2000, 10),
            mapping(100, 1005, 1),
            mapping(u32::MAX, 0, 2),
        ]));
    }
    let problems = problems_of(&spec);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("[1]: container range overlaps entry 0"));
    assert!(problems[1].contains("[2]: host range overlaps entry 0"));
    assert!(problems[2].contains("[3]: range overflows"));

    // Mappings without a user namespace.
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::Network),
        ]));
    }
    assert_one_problem(&spec, "no user namespace is configured");
    // A new user namespace without mappings is left to the runtime's defaults.
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_uid_mappings(None);
        l.set_gid_mappings(None);
    }
    validate(&spec).unwrap();
    // Joining an existing user namespace needs no mappings.
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        let mut userns = ns(LinuxNamespaceType::User);
        userns.set_path(Some("/proc/1/ns/user".into()));
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::Network),
            userns,
        ]));
        l.set_uid_mappings(None);
        l.set_gid_mappings(None);
    }
    validate(&spec).unwrap();
    // A hostname needs a UTS namespace.
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::User),
            ns(LinuxNamespaceType::Network),
        ]));
    }
    assert_one_problem(&spec, "hostname: set without a UTS namespace");
}

#[test]
fn checks_sysctl_paths_and_seccomp() {
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_sysctl(Some(
            [
                ("".to_owned(), "1".to_owned()),
                ("a b".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
        ));
        l.set_masked_paths(Some(vec!["proc/kcore".to_owned()]));
        l.set_readonly_paths(Some(vec![String::new()]));
        l.set_seccomp(Some(
            LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActAllow)
                .syscalls(vec![
                    LinuxSyscallBuilder::default()
                        .names(Vec::<String>::new())
                        .action(LinuxSeccompAction::ScmpActErrno)
                        .build()
                        .unwrap(),
                    LinuxSyscallBuilder::default()
                        .names(vec!["ptrace".to_owned(), String::new()])
                        .action(LinuxSeccompAction::ScmpActErrno)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        ));
    }
    let problems = problems_of(&spec);
    assert_eq!(
        problems,
        vec![
            "linux.sysctl: empty key".to_owned(),
            "linux.sysctl: key \"a b\" contains whitespace or NUL".to_owned(),
            "linux.maskedPaths[0]: proc/kcore is not an absolute path".to_owned(),
            "linux.readonlyPaths[0]: empty".to_owned(),
            "linux.seccomp.syscalls[0].names: empty".to_owned(),
            "linux.seccomp.syscalls[1].names[1]: empty".to_owned(),
        ]
    );
}

#[test]
fn reports_many_problems_together() {
    let mut spec = good_spec();
    spec.set_version("2.0".to_owned());
    spec.set_root(None);
    spec.set_mounts(Some(vec![
        MountBuilder::default()
            .destination("relative")
            .build()
            .unwrap(),
    ]));
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(Vec::new()));
        p.set_cwd("work".into());
    }
    spec.set_hooks(Some(
        HooksBuilder::default()
            .poststart(vec![
                HookBuilder::default().path("hook.sh").build().unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    if let Some(l) = spec.linux_mut() {
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Network),
            ns(LinuxNamespaceType::Network),
            ns(LinuxNamespaceType::User),
        ]));
        l.set_uid_mappings(Some(vec![mapping(0, 0, 0)]));
        l.set_sysctl(Some(
            [(String::new(), "x".to_owned())].into_iter().collect(),
        ));
    }
    let err = validate(&spec).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    let Error::InvalidSpec { problems } = &err else {
        panic!("unexpected {err}");
    };
    let expected_prefixes = [
        "ociVersion:",
        "root: missing",
        "mounts[0].destination:",
        "process.args: empty",
        "process.cwd:",
        "hooks.poststart[0].path:",
        "linux.namespaces[1].type: duplicate",
        "linux.uidMappings[0].size:",
        "hostname: set without a UTS namespace",
        "linux.sysctl: empty key",
    ];
    assert_eq!(problems.len(), expected_prefixes.len(), "{problems:#?}");
    for (problem, prefix) in problems.iter().zip(expected_prefixes) {
        assert!(
            problem.starts_with(prefix),
            "{problem:?} should start with {prefix:?}"
        );
    }
    // The message lists them all.
    let message = err.to_string();
    for prefix in expected_prefixes {
        assert!(message.contains(prefix), "{message}");
    }
}

#[test]
fn validate_json_reports_unknown_names_with_other_problems() {
    let json = r#"{
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh"],
            "cwd": "relative",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_FLY", "sys_admin"],
                "effective": ["CAP_CHOWN"],
                "ambient": [42]
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
                {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 2}
            ]
        },
        "linux": {
            "namespaces": [{"type": "mount"}],
            "seccomp": {"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
        }
    }"#;
    let err = validate_json(json.as_bytes()).unwrap_err();
    let Error::InvalidSpec { problems } = &err else {
        panic!("unexpected {err}");
    };
    let expected = [
        "process.capabilities.bounding[1]: unknown capability \"CAP_FLY\"",
        "process.capabilities.bounding[2]: unknown capability \"sys_admin\"",
        "process.capabilities.ambient[0]: unknown capability 42",
        "process.rlimits[1].type: unknown rlimit \"RLIMIT_BOGUS\"",
        "linux.seccomp.defaultAction: missing",
        "process.cwd: relative is not an absolute path",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, prefix) in problems.iter().zip(expected) {
        assert!(
            problem.starts_with(prefix),
            "{problem:?} should start with {prefix:?}"
        );
    }

    // A clean document comes back decoded.
    let clean = r#"{
        "ociVersion": "1.1.0",
        "root": {"path": "rootfs"},
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}]
        },
        "linux": {
            "namespaces": [{"type": "mount"}],
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
        }
    }"#;
    let spec = validate_json(clean.as_bytes()).unwrap();
    assert_eq!(spec.version(), "1.1.0");

    // Not JSON at all, and JSON that is not a spec.
    assert!(matches!(validate_json(b"{"), Err(Error::Json { .. })));
    let err = validate_json(br#"{"ociVersion": 7}"#).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSpec { problems } if problems[0].contains("does not decode")),
        "{err}"
    );
}

#[test]
fn capability_and_rlimit_tables_match_oci_spec() {
    assert_eq!(capability_number("CAP_CHOWN"), Some(0));
    assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
    assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
    assert_eq!(capability_number("CAP_NOPE"), None);
    // Every name in our tables decodes with oci-spec, and its encoder writes it back.
    for name in CAPABILITIES {
        let cap: Capability = serde_json::from_value(Value::from(name)).unwrap();
        assert_eq!(serde_json::to_value(cap).unwrap(), Value::from(name));
    }
    for name in RLIMITS {
        let r: PosixRlimitType = serde_json::from_value(Value::from(name)).unwrap();
        assert_eq!(serde_json::to_value(r).unwrap(), Value::from(name));
    }
}

#[test]
fn checks_sysctl_namespaces_propagation_and_oom_score() {
    let mut spec = good_spec();
    if let Some(l) = spec.linux_mut() {
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::User),
        ]));
        l.set_sysctl(Some(
            [
                ("net.ipv4.ip_forward", "1"),
                ("kernel.shmmax", "1"),
                ("fs.mqueue.msg_max", "10"),
                ("kernel.domainname", "x"),
                ("vm.overcommit_memory", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ));
        l.set_rootfs_propagation(Some("sideways".to_owned()));
    }
    if let Some(p) = spec.process_mut() {
        p.set_oom_score_adj(Some(1001));
    }
    let problems = problems_of(&spec);
    assert_eq!(
        problems,
        vec![
            "process.oomScoreAdj: 1001 is outside -1000..=1000".to_owned(),
            "linux.sysctl: fs.mqueue.msg_max needs namespace type ipc, which is not configured".to_owned(),
            "linux.sysctl: kernel.shmmax needs namespace type ipc, which is not configured".to_owned(),
            "linux.sysctl: net.ipv4.ip_forward needs namespace type net, which is not configured".to_owned(),
            "linux.sysctl: vm.overcommit_memory is not namespaced; setting it would change the host"
                .to_owned(),
            "linux.rootfsPropagation: unknown value \"sideways\" (expected one of private, \
             rprivate, slave, rslave, shared, rshared, unbindable, runbindable)"
                .to_owned(),
        ]
    );

    // With the namespaces configured (a joined one counts) the same sysctls are fine.
    if let Some(l) = spec.linux_mut() {
        let mut netns = ns(LinuxNamespaceType::Network);
        netns.set_path(Some("/var/run/netns/test".into()));
        l.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::User),
            ns(LinuxNamespaceType::Ipc),
            netns,
        ]));
        if let Some(sysctl) = l.sysctl_mut() {
            sysctl.remove("vm.overcommit_memory");
        }
        l.set_rootfs_propagation(Some("rslave".to_owned()));
    }
    if let Some(p) = spec.process_mut() {
        p.set_oom_score_adj(Some(-1000));
    }
    validate(&spec).unwrap();
}
