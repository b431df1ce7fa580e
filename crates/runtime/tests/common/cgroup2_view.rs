//! Private views of the host's cgroup2 tree for helper processes: a test
//! re-executes its own binary (see [`super::helper`]) and, in that child,
//! unshares the mount namespace and remounts `/sys/fs/cgroup` so that the
//! runtime sees a unified host (the cgroup2 hierarchy at `/sys/fs/cgroup`)
//! or a v1-only one (the cgroup2 tree hidden under a tmpfs). The host's
//! mounts are never touched: every mount here happens after `unshare` and
//! a recursive `MS_PRIVATE` of `/`, and goes with the helper's exit.

use std::path::Path;

/// mount(2) of `src` on `target` (file system `fstype`, `flags`, no data);
/// panics naming `target` and the errno when the kernel refuses.
pub fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
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

/// Moves this (helper) process into a new mount namespace whose mounts
/// propagate nowhere: what it mounts from now on stays its own.
pub fn enter_private_mount_namespace() {
    // SAFETY: unshare of the mount namespace in this (helper) process.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
    mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE);
}

/// Enters a private mount namespace whose `/sys/fs/cgroup` is the host's
/// cgroup2 hierarchy: a unified host, to the runtime (asserted).
pub fn enter_unified_view() {
    enter_private_mount_namespace();
    mount("cgroup2", "/sys/fs/cgroup", Some("cgroup2"), 0);
    assert!(
        berth_runtime::cgroups::is_unified(),
        "the view is not unified"
    );
}

/// Enters a private mount namespace in which a hybrid host's cgroup2 tree
/// (`/sys/fs/cgroup/unified`) is hidden under an empty tmpfs, as
/// `shared/bench/cgv1-view.sh` hides it: mountinfo still lists the cgroup2
/// mount, but its mount point is now another file system. Returns the
/// hidden mount point.
pub fn enter_v1_only_view() -> &'static Path {
    enter_private_mount_namespace();
    mount("hide", "/sys/fs/cgroup/unified", Some("tmpfs"), 0);
    Path::new("/sys/fs/cgroup/unified")
}

/// True when the host has a cgroup2 hierarchy (at `/sys/fs/cgroup/unified`
/// on a hybrid host, `/sys/fs/cgroup` on a unified one) and the tests have
/// root; otherwise says why they skip (and fails in CI, see
/// [`super::privileged`]).
pub fn cgroup2_hierarchy() -> bool {
    if !super::privileged() {
        return false;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let found = info.lines().any(|l| {
        l.split(" - ")
            .nth(1)
            .is_some_and(|f| f.starts_with("cgroup2 "))
            && matches!(
                l.split_whitespace().nth(4),
                Some("/sys/fs/cgroup/unified" | "/sys/fs/cgroup")
            )
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI host has no cgroup2 hierarchy"
        );
        eprintln!("skipping: no cgroup2 hierarchy on this host");
    }
    found
}

/// What a hybrid-only test does on a unified host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnifiedHost {
    /// Skips, in CI too: the unified case is another file's.
    Skip,
    /// Fails in CI (whose host is hybrid); skips elsewhere.
    FailInCi,
}

/// True on a hybrid host: root, v1 controllers (the runtime does not see
/// a unified host), the cgroup2 tree at `/sys/fs/cgroup/unified` and the v1
/// devices controller. Otherwise says why it skips: on a unified host
/// naming where that case is tested (`unified_note`) and failing in CI as
/// `on_unified` says; on a host without the tree or the controller failing
/// in CI (this project's CI host is hybrid: there both must be present).
pub fn hybrid_host(unified_note: &str, on_unified: OnUnifiedHost) -> bool {
    if !super::privileged() {
        return false;
    }
    if berth_runtime::cgroups::is_unified() {
        if on_unified == OnUnifiedHost::FailInCi {
            assert!(
                std::env::var_os("CI").is_none(),
                "the CI host is hybrid, this one is unified"
            );
        }
        eprintln!("skipping: a unified host ({unified_note})");
        return false;
    }
    let ok = Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && Path::new("/sys/fs/cgroup/devices/devices.allow").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI host lacks the hybrid cgroup2 tree or the v1 devices controller"
        );
        eprintln!("skipping: not a hybrid host");
    }
    ok
}

/// Asserts that process `pid` is a member of cgroup2 cgroup `/cg` (as its
/// `/proc/<pid>/cgroup` says, in the caller's cgroup namespace).
pub fn assert_cgroup2_member(pid: i32, cg: &str) {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        membership.lines().any(|l| l == format!("0::/{cg}")),
        "{membership}"
    );
}

/// Asserts that `pid` is the only process in the cgroup directory `dir`.
pub fn assert_sole_process(dir: &Path, pid: i32) {
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap()
            .trim(),
        pid.to_string()
    );
}
