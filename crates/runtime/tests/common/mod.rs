//! Shared helpers of the runtime's integration tests: a busybox bundle in a
//! temp dir, a spec builder, output capture through a pipe, and guards that
//! delete containers and temp dirs even when a test fails.
//!
//! Submodules, for the tests that need them: [`helper`] runs a test's
//! helper process (this binary again, on one ignored test);
//! [`cgroup2_view`] gives such a helper a private unified or v1-only view
//! of the host's cgroup2 tree and tells what the host has; [`devices`]
//! holds device-rule fixtures and the checks of their effect.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cgroup2_view;
pub mod devices;
pub mod helper;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_runtime::oci_spec::runtime::{
    Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use berth_runtime::{ContainerProcess, CreateOptions, ExecOptions, ExitStatus, Runtime, Stdio};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when the tests can run (root). Outside CI a missing privilege skips
/// with a reason; in CI (`CI` set) it fails loudly.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let busybox = Path::new("/bin/busybox").exists();
    if root && busybox {
        return true;
    }
    let why = if !root {
        "not root"
    } else {
        "/bin/busybox missing (busybox-static)"
    };
    if std::env::var_os("CI").is_some() {
        panic!("runtime integration tests need root and busybox-static in CI: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// A unique name for ids, cgroups and dirs.
pub fn unique(tag: &str) -> String {
    format!(
        "berth-t{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A test environment: a state root, a bundle with a busybox rootfs, and
/// the ids to clean up.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-rt-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let runtime = Runtime::new(dir.path().join("state")).unwrap();
        Env {
            dir,
            runtime,
            ids: Default::default(),
        }
    }

    /// Builds a bundle dir named `name` with a busybox rootfs and `spec`.
    pub fn bundle(&self, name: &str, spec: &Spec) -> PathBuf {
        let b = self.dir.path().join(name);
        let rootfs = b.join("rootfs");
        if !rootfs.exists() {
            make_rootfs(&rootfs);
        }
        std::fs::write(
            b.join("config.json"),
            serde_json::to_vec_pretty(spec).unwrap(),
        )
        .unwrap();
        b
    }

    /// A fresh container id, registered for cleanup.
    pub fn id(&self, tag: &str) -> String {
        let id = unique(tag);
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// The cgroup2 directory that container `id`'s state records. Panics,
    /// naming `id`, when the container has no state or no cgroup2 directory.
    pub fn unified_cgroup_dir(&self, id: &str) -> PathBuf {
        self.runtime
            .state(id)
            .unwrap_or_else(|e| panic!("state {id}: {e}"))
            .cgroup_paths()
            .unified
            .unwrap_or_else(|| panic!("{id} has no cgroup2 directory"))
    }

    /// Creates container `id` from `bundle` with default options (stdio
    /// inherited); returns its init process. Panics, naming `id`, when create
    /// fails.
    pub fn create(&self, id: &str, bundle: &Path) -> ContainerProcess {
        self.runtime
            .create(id, bundle, CreateOptions::default())
            .unwrap_or_else(|e| panic!("create {id}: {e}"))
    }

    /// Creates container `id` from `bundle` with its stdout on a pipe (the
    /// other fds inherited); returns the init process and the pipe's read
    /// end. Panics, naming `id`, when create fails.
    pub fn create_piped(&self, id: &str, bundle: &Path) -> (ContainerProcess, OwnedFd) {
        self.create_piped_with(id, bundle, CreateOptions::default())
    }

    /// As [`Env::create_piped`], with `opts` for everything but stdout.
    pub fn create_piped_with(
        &self,
        id: &str,
        bundle: &Path,
        opts: CreateOptions,
    ) -> (ContainerProcess, OwnedFd) {
        let (r, w) = pipe();
        let opts = CreateOptions {
            stdout: Stdio::Fd(w),
            ..opts
        };
        let init = self
            .runtime
            .create(id, bundle, opts)
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
        (init, r)
    }

    /// Runs `process` in container `id` with its stdout on a pipe (the other
    /// fds inherited); returns the process and the pipe's read end. Panics,
    /// naming `id`, when exec fails.
    pub fn exec_piped(&self, id: &str, process: &Process) -> (ContainerProcess, OwnedFd) {
        self.exec_piped_with(id, process, ExecOptions::default())
    }

    /// As [`Env::exec_piped`], with `opts` for everything but stdout.
    pub fn exec_piped_with(
        &self,
        id: &str,
        process: &Process,
        opts: ExecOptions,
    ) -> (ContainerProcess, OwnedFd) {
        let (r, w) = pipe();
        let opts = ExecOptions {
            stdout: Stdio::Fd(w),
            ..opts
        };
        let child = self
            .runtime
            .exec(id, process, opts)
            .unwrap_or_else(|e| panic!("exec in {id}: {e}"));
        (child, r)
    }

    /// Runs `exec` of `sh -c script` in container `id`, asserting exit 0;
    /// returns stdout and stderr together (one pipe).
    pub fn exec_sh(&self, id: &str, script: &str) -> String {
        let (r, w) = pipe();
        let w2 = w.try_clone().unwrap();
        let p = process_builder(&["sh", "-c", script]).build().unwrap();
        let child = self
            .runtime
            .exec(
                id,
                &p,
                ExecOptions {
                    stdout: Stdio::Fd(w),
                    stderr: Stdio::Fd(w2),
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("exec in {id}: {e}"));
        assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0), "{script}");
        read_all(r)
    }

    /// Creates, starts and waits for a container running `spec`; returns
    /// its exit status and what it wrote to stdout and stderr.
    pub fn run(&self, tag: &str, spec: Spec) -> (ExitStatus, String, String) {
        let id = self.id(tag);
        let bundle = self.bundle(&id, &spec);
        let (err_r, err_w) = pipe();
        let (init, out_r) = self.create_piped_with(
            &id,
            &bundle,
            CreateOptions {
                stdin: Stdio::Null,
                stderr: Stdio::Fd(err_w),
                ..Default::default()
            },
        );
        self.runtime
            .start(&id)
            .unwrap_or_else(|e| panic!("start {id}: {e}"));
        let out = std::thread::spawn(move || read_all(out_r));
        let err = std::thread::spawn(move || read_all(err_r));
        let status = init.wait().unwrap();
        self.runtime.delete(&id, false).unwrap();
        (status, out.join().unwrap(), err.join().unwrap())
    }

    /// Runs `script` with `sh -c` in a default container and returns stdout,
    /// asserting exit 0.
    pub fn sh(&self, tag: &str, script: &str) -> String {
        let (st, out, err) = self.run(tag, spec(&["sh", "-c", script], &unique(tag)));
        assert_eq!(
            st,
            ExitStatus::Exited(0),
            "script failed: {script}\nstdout: {out}\nstderr: {err}"
        );
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.runtime.delete(id, true);
        }
    }
}

/// A close-on-exec pipe: (read, write).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn read_all(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

/// A busybox root filesystem: the static binary plus one symlink per applet.
pub fn make_rootfs(rootfs: &Path) {
    for d in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "root", "out", "ro", "data",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(rootfs.join("ro/file"), "readonly\n").unwrap();
}

fn m(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

/// The standard mounts of a runc-style container.
pub fn default_mounts() -> Vec<Mount> {
    vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// Capabilities runc grants by default.
pub fn default_caps() -> Vec<Capability> {
    use Capability::*;
    vec![
        AuditWrite,
        Chown,
        DacOverride,
        Fowner,
        Fsetid,
        Kill,
        Mknod,
        NetBindService,
        NetRaw,
        Setfcap,
        Setgid,
        Setpcap,
        Setuid,
        SysChroot,
    ]
}

pub fn namespaces(types: &[LinuxNamespaceType]) -> Vec<oci_spec::runtime::LinuxNamespace> {
    types
        .iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(*t).build().unwrap())
        .collect()
}

pub fn all_namespaces() -> Vec<oci_spec::runtime::LinuxNamespace> {
    use LinuxNamespaceType::*;
    namespaces(&[Pid, Network, Ipc, Uts, Mount, Cgroup])
}

/// A default spec running `args`, with its own cgroup path `/<cgroup>`.
pub fn spec(args: &[&str], cgroup: &str) -> Spec {
    spec_builder(args, cgroup).build().unwrap()
}

pub fn process_builder(args: &[&str]) -> ProcessBuilder {
    let caps: oci_spec::runtime::Capabilities = default_caps().into_iter().collect();
    ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec![
            "PATH=/bin".to_string(),
            "TERM=xterm".to_string(),
            "BERTH_TEST=hello".to_string(),
        ])
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                // oci-spec's builder defaults the other sets to a non-empty list.
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()
                .unwrap(),
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(1024u64)
                .build()
                .unwrap(),
        ])
        .no_new_privileges(true)
}

pub fn linux_builder(cgroup: &str) -> LinuxBuilder {
    LinuxBuilder::default()
        .namespaces(all_namespaces())
        .cgroups_path(PathBuf::from(format!("/{cgroup}")))
        .masked_paths(
            [
                "/proc/kcore",
                "/proc/keys",
                "/proc/timer_list",
                "/sys/firmware",
                "/proc/scsi",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        )
        .readonly_paths(
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        )
        .sysctl(HashMap::new())
}

/// The default `linux` section (cgroup path `/<cgroup>`) plus a user
/// namespace mapping container uids and gids 0..65536 to host ids from
/// `host_id` on.
pub fn userns_linux(cgroup: &str, host_id: u32) -> Linux {
    use LinuxNamespaceType::*;
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_id)
        .size(65536u32)
        .build()
        .unwrap();
    linux_builder(cgroup)
        .namespaces(namespaces(&[Pid, Network, Ipc, Uts, Mount, Cgroup, User]))
        .uid_mappings(vec![map])
        .gid_mappings(vec![map])
        .build()
        .unwrap()
}

/// A default spec running `args` in cgroup `/<cgroup>` with `resources`
/// as `linux.resources`.
pub fn spec_with_resources(
    args: &[&str],
    cgroup: &str,
    resources: oci_spec::runtime::LinuxResources,
) -> Spec {
    let linux = linux_builder(cgroup).resources(resources).build().unwrap();
    spec_builder(args, cgroup).linux(linux).build().unwrap()
}

pub fn spec_builder(args: &[&str], cgroup: &str) -> SpecBuilder {
    SpecBuilder::default()
        .version("1.2.0")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .unwrap(),
        )
        .hostname("berth-test")
        .mounts(default_mounts())
        .process(process_builder(args).build().unwrap())
        .linux(linux_builder(cgroup).build().unwrap())
}

/// Every directory of `paths`: one per v1 hierarchy, then the cgroup2 one
/// (if any).
pub fn cgroup_dirs(paths: &berth_runtime::CgroupPaths) -> Vec<PathBuf> {
    paths
        .v1
        .values()
        .chain(paths.unified.iter())
        .cloned()
        .collect()
}

/// Asserts that no cgroup directory named `name` remains in any hierarchy.
pub fn assert_no_cgroup(name: &str) {
    for p in cgroup_dirs(&berth_runtime::CgroupPaths::for_relative(name)) {
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
}
