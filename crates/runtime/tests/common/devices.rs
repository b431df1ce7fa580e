//! Device-rule fixtures: OCI device rules, a sleeping container bundle
//! that carries them, a shell probe that opens `/dev/net/tun` for each
//! access, and what the host shows of the result (our device programs on a
//! cgroup2 directory, the v1 devices list).
//!
//! The device probed is `/dev/net/tun` (c 10:200): not among the runtime's
//! default devices, and opening it needs no capability, so an `EPERM` can
//! only come from the device cgroup (v1 controller or cgroup2 program).

use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::cgroups::bpf;
use berth_runtime::oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources,
    LinuxResourcesBuilder, Spec,
};

/// A `linux.resources.devices` rule: `allow` (or deny) `access` (of `rwm`)
/// to the `typ` device `major:minor`.
pub fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .build()
        .unwrap()
}

/// The rule denying every access to every device (the head of runc's,
/// podman's and containerd's device lists).
pub fn deny_all_devices() -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap()
}

/// The rule allowing `access` to `/dev/net/tun` (c 10:200).
pub fn tun_rule(access: &str) -> LinuxDeviceCgroup {
    device_rule(true, LinuxDeviceType::C, 10, 200, access)
}

/// `linux.resources` whose device list allows `access` to `/dev/net/tun`.
pub fn tun_resources(access: &str) -> LinuxResources {
    device_resources(vec![tun_rule(access)])
}

/// `linux.resources` with `rules` as its device list (and nothing else).
pub fn device_resources(rules: Vec<LinuxDeviceCgroup>) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .unwrap()
}

/// A default spec running `sleep` in cgroup `/cg`, with `rules` as
/// `linux.resources.devices`.
pub fn device_sleeper(cg: &str, rules: Vec<LinuxDeviceCgroup>) -> Spec {
    super::spec_with_resources(&["sleep", "1000"], cg, device_resources(rules))
}

/// Makes the tun node (once) and tries opening it for reading, for
/// writing, and both; prints one line per attempt (`r-ok`, `w-denied`…),
/// `mknod-failed` when the node could not be made, and `null-ok` when
/// `/dev/null` (a runtime default) could be written.
pub const TUN_PROBE: &str = "test -c /tmp/tun || mknod /tmp/tun c 10 200 || echo mknod-failed; \
     for m in r w rw; do \
       case $m in r) sh -c 'true </tmp/tun' ;; w) sh -c 'true >/tmp/tun' ;; rw) sh -c 'true <>/tmp/tun' ;; esac \
         && echo $m-ok || echo $m-denied; \
     done; echo x >/dev/null && echo null-ok";

/// Whether `out` has the line `line`.
pub fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// Asserts that `text` has each of `lines` as a whole line.
pub fn assert_has_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(has_line(text, line), "no line {line:?} in:\n{text}");
    }
}

/// Asserts that [`TUN_PROBE`]'s output `out` shows tun readable only: the
/// node was made, reading opened, writing and read-write were refused by
/// the kernel (`EPERM`), and `/dev/null` stayed writable.
pub fn assert_tun_read_only(out: &str) {
    assert!(!out.contains("mknod-failed"), "{out}");
    assert!(has_line(out, "r-ok"), "{out}");
    assert!(has_line(out, "w-denied"), "{out}");
    assert!(
        has_line(out, "rw-denied"),
        "O_RDWR asks for the denied write too: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(has_line(out, "null-ok"), "{out}");
}

/// The ids of this runtime's device programs attached to the cgroup2
/// directory `dir` (the calling thread must have bpf(2)).
pub fn our_programs(dir: &Path) -> Vec<u32> {
    bpf::attached(dir)
        .unwrap()
        .into_iter()
        .filter(|p| p.name == bpf::PROG_NAME)
        .map(|p| p.id)
        .collect()
}

/// The id of the one device program of ours attached to `dir` (asserted:
/// exactly one).
pub fn our_program(dir: &Path) -> u32 {
    let ours = our_programs(dir);
    assert_eq!(ours.len(), 1, "{:?}", bpf::attached(dir));
    ours[0]
}

/// Waits (up to 20 s) until the kernel has freed program `id`, which it
/// does asynchronously once the program's cgroup is removed; panics when
/// it is still loaded then.
pub fn wait_until_unloaded(id: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpf::is_loaded(id).unwrap() {
        assert!(
            Instant::now() < deadline,
            "program {id} still loaded 20s after its cgroup was removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The v1 devices list (`devices.list`) of cgroup `cg`.
pub fn v1_devices_list(cg: &str) -> String {
    let dir = berth_runtime::CgroupPaths::for_relative(cg).v1["devices"].clone();
    std::fs::read_to_string(dir.join("devices.list")).unwrap()
}
