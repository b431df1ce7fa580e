//! What the runtime does when the kernel refuses the cgroup2 device
//! program, made to happen for real: a seccomp filter (libseccomp) makes
//! bpf(2) fail with a chosen errno on the thread that creates or updates
//! the container, so `bpf::install` inside `Cgroup::apply` gets the
//! kernel's refusal as a kernel without cgroup BPF (`ENOSYS`, `EINVAL`) or
//! a runtime without the privilege for it (`EPERM`: an LSM's veto, missing
//! `CAP_BPF`, Docker's default seccomp profile) would give it.
//!
//! Every scenario runs in a helper process (this binary run again with
//! `--ignored --exact`), so that no filter, mount namespace or subscriber
//! reaches another test. Inside the helper the filter is loaded on one
//! thread only (no TSYNC): the helper's other thread keeps bpf(2) and looks
//! at the cgroup with the crate's own `bpf::attached`. The filter is
//! inherited by what that thread forks (the container's init, which never
//! calls bpf(2)). The runtime's warnings are captured on the filtered
//! thread by a small tracing subscriber.
//!
//! - hybrid host (v1 controllers plus the cgroup2 tree at
//!   `/sys/fs/cgroup/unified`): create and update succeed with a warning,
//!   no program is attached, the v1 devices controller holds the rules and
//!   alone refuses what they deny; a refusal over a program of ours that
//!   an earlier create attached is an error (it would keep the old rules);
//! - unified host (the helper's private mount namespace shows the cgroup2
//!   tree at `/sys/fs/cgroup`, as in `cgroup_v2.rs`): the refusal is an
//!   error naming the cgroup, and nothing is left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_runtime::cgroups::{bpf, device_filter};
use berth_runtime::{CgroupPaths, CreateOptions, ErrorKind, ExitStatus};
use common::cgroup2_view::{
    OnUnifiedHost, assert_sole_process, cgroup2_hierarchy, enter_unified_view, hybrid_host,
};
use common::devices::*;
use common::helper::{helper_passed, is_helper, run_helper_test};
use common::*;
use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// Set in a helper process: the helper's scenario parameters follow.
const HELPER: &str = "BERTH_TEST_HELPER_BPF_FALLBACK";
/// The cgroup path (without the leading `/`) the helper must use.
const CG: &str = "BERTH_TEST_BPF_FALLBACK_CG";
/// The errno bpf(2) fails with (`ENOSYS`, `EINVAL`, `EPERM`).
const ERRNO: &str = "BERTH_TEST_BPF_FALLBACK_ERRNO";
/// Which bpf(2) commands fail (`all`, `prog-load`).
const REFUSED: &str = "BERTH_TEST_BPF_FALLBACK_REFUSED";
/// The start of the runtime's fallback warning.
const FALLBACK_WARNING: &str = "the kernel refused the cgroup2 device program";

/// bpf(2)'s `BPF_PROG_LOAD` command.
const BPF_PROG_LOAD: u64 = 5;

/// Which bpf(2) calls the filter refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Every command: a kernel without bpf(2) or without cgroup BPF, or a
    /// seccomp profile that forbids bpf(2).
    All,
    /// Only loading programs (an LSM that vetoes `prog_load`): querying
    /// what is attached still works, so the runtime sees what is there.
    ProgLoad,
}

impl Refused {
    fn name(self) -> &'static str {
        match self {
            Refused::All => "all",
            Refused::ProgLoad => "prog-load",
        }
    }

    fn from_name(s: &str) -> Refused {
        match s {
            "all" => Refused::All,
            "prog-load" => Refused::ProgLoad,
            s => panic!("unknown {REFUSED} {s:?}"),
        }
    }
}

fn errno_from_name(name: &str) -> i32 {
    match name {
        "ENOSYS" => libc::ENOSYS,
        "EINVAL" => libc::EINVAL,
        "EPERM" => libc::EPERM,
        s => panic!("unknown {ERRNO} {s:?}"),
    }
}

/// The kernel's text for `errno` (as it appears in the runtime's messages).
fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// Loads, on the calling thread only, a seccomp filter that makes the
/// `which` bpf(2) calls fail with `errno`, and checks that the kernel now
/// refuses a device program for real.
fn refuse_bpf_on_this_thread(errno: i32, which: Refused) {
    let mut f = ScmpFilterContext::new(ScmpAction::Allow).unwrap();
    // As root, CAP_SYS_ADMIN allows the filter without no_new_privs, which
    // would otherwise be inherited by the container's init.
    f.set_ctl_nnp(false).unwrap();
    let bpf_call = ScmpSyscall::from_name("bpf").unwrap();
    match which {
        Refused::All => f.add_rule(ScmpAction::Errno(errno), bpf_call),
        Refused::ProgLoad => f.add_rule_conditional(
            ScmpAction::Errno(errno),
            bpf_call,
            &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, BPF_PROG_LOAD)],
        ),
    }
    .unwrap();
    // libseccomp's TSYNC attribute is off by default: this thread only.
    f.load().unwrap();
    let refused = bpf::load(&device_filter::compile(&[])).unwrap_err();
    assert_eq!(refused.errno(), Some(errno), "{refused}");
}

/// Runs `f` on a new thread whose bpf(2) calls fail as `errno`/`which`
/// say, with a subscriber collecting that thread's warnings; returns what
/// `f` returned and the warnings (one `message=… field=…` line each).
/// Checks afterwards that the calling thread still has bpf(2).
fn with_bpf_refused<T: Send>(
    errno: i32,
    which: Refused,
    f: impl FnOnce() -> T + Send,
) -> (T, Vec<String>) {
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            refuse_bpf_on_this_thread(errno, which);
            let warnings = Arc::new(Mutex::new(Vec::new()));
            let out = tracing::subscriber::with_default(Warnings(warnings.clone()), f);
            let lines = std::mem::take(&mut *warnings.lock().unwrap());
            (out, lines)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    let fd = bpf::load(&device_filter::compile(&[]));
    assert!(fd.is_ok(), "the filter reached the calling thread: {fd:?}");
    out
}

/// A tracing subscriber that keeps the `WARN` events as text.
struct Warnings(Arc<Mutex<Vec<String>>>);

/// An event's fields as ` name=value` pairs.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push(fields.0.trim_start().to_string());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The fallback warnings among `warnings`.
fn fallback_warnings(warnings: &[String]) -> Vec<&String> {
    warnings
        .iter()
        .filter(|w| w.contains(FALLBACK_WARNING))
        .collect()
}

/// True on a hybrid host (with root); otherwise says why it skips (and
/// fails in CI, whose host is hybrid).
fn hybrid() -> bool {
    hybrid_host(
        "its refusal is tested through the unified view",
        OnUnifiedHost::FailInCi,
    )
}

/// Removes, on drop, whatever a helper left of the cgroups `names` (in the
/// parent, so that even a helper that died leaves nothing): kills their
/// processes, then removes their directories in every hierarchy.
struct CgroupCleanup(Vec<String>);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let dirs = cgroup_dirs(&CgroupPaths::for_relative(name));
            for dir in &dirs {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill with plain integers.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            for dir in &dirs {
                for _ in 0..100 {
                    match std::fs::remove_dir(dir) {
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}

/// Runs helper test `name` in a child process with the scenario `env`;
/// it must print `marker`. Afterwards no cgroup named in `cgroups` may
/// remain (the guard removes what does, so the host stays clean).
fn run_helper(name: &str, env: &[(&str, &str)], cgroups: &[String], marker: &str) {
    let _cleanup = CgroupCleanup(cgroups.to_vec());
    run_helper_test(HELPER, name, env, marker);
    for cg in cgroups {
        assert_no_cgroup(cg);
    }
}

/// The helper's scenario, when this process is one.
fn helper_scenario() -> Option<(String, i32, Refused)> {
    if !is_helper(HELPER) {
        return None;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    Some((
        var(CG),
        errno_from_name(&var(ERRNO)),
        Refused::from_name(&var(REFUSED)),
    ))
}

/// Helper: on a hybrid host whose kernel refuses the device program,
/// create and update succeed with one warning each, naming the cgroup and
/// the errno; no program is attached to the container's cgroup2 directory
/// (which exists and holds the init); the v1 devices controller has the
/// rules and alone refuses what they deny, per access, until an update
/// (refused the same way) grants it.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_hybrid_refusal_falls_back_to_v1() {
    let Some((cg, errno, which)) = helper_scenario() else {
        return;
    };
    let env = Env::new();
    let id = env.id("bpfrefused");
    let bundle = env.bundle(&id, &device_sleeper(&cg, vec![tun_rule("r")]));
    let (init, warnings) = with_bpf_refused(errno, which, || {
        env.runtime.create(&id, &bundle, CreateOptions::default())
    });
    let init = init.unwrap_or_else(|e| panic!("create with bpf(2) refused: {e}"));
    let fallback = fallback_warnings(&warnings);
    assert_eq!(fallback.len(), 1, "{warnings:?}");
    assert!(
        fallback[0].contains(&format!("cgroup=/{cg}")),
        "{fallback:?}"
    );
    assert!(
        fallback[0].contains(&format!("error=BPF_PROG_LOAD: {}", errno_text(errno))),
        "{fallback:?}"
    );
    assert!(
        fallback[0].contains("the v1 devices controller alone enforces"),
        "{fallback:?}"
    );

    // The cgroup2 directory is there, with the init in it, but no program.
    let dir = env.unified_cgroup_dir(&id);
    assert_eq!(dir, Path::new("/sys/fs/cgroup/unified").join(&cg));
    assert_sole_process(&dir, init.pid());
    assert_eq!(
        bpf::attached(&dir).unwrap(),
        vec![],
        "a program was attached"
    );

    // The v1 controller has the whole list: deny-all base, the spec's
    // rule, the runtime's allowances.
    let list = v1_devices_list(&cg);
    assert_has_lines(&list, &["c 10:200 r", "c 1:3 rwm"]);
    assert!(!has_line(&list, "a *:* rwm"), "{list}");

    // And it alone enforces it.
    env.runtime.start(&id).unwrap();
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_tun_read_only(&out);

    // An update refused the same way replaces the v1 list, with a warning.
    let (updated, warnings) = with_bpf_refused(errno, which, || {
        env.runtime.update(&id, &tun_resources("rw"))
    });
    updated.unwrap_or_else(|e| panic!("update with bpf(2) refused: {e}"));
    assert_eq!(fallback_warnings(&warnings).len(), 1, "{warnings:?}");
    assert_has_lines(&v1_devices_list(&cg), &["c 10:200 rw"]);
    assert_eq!(bpf::attached(&dir).unwrap(), vec![]);
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-ok", "w-ok", "rw-ok"]);

    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_no_cgroup(&cg);
    // exit() skips destructors: remove the temp dir (state root, bundle) first.
    drop(env);
    helper_passed("HYBRID-FALLBACK-OK");
}

/// Runs [`helper_hybrid_refusal_falls_back_to_v1`] with bpf(2) refused as
/// `errno`/`which`.
fn hybrid_fallback(errno: &str, which: Refused) {
    if !hybrid() {
        return;
    }
    let cg = unique("cg");
    run_helper(
        "helper_hybrid_refusal_falls_back_to_v1",
        &[(CG, &cg), (ERRNO, errno), (REFUSED, which.name())],
        std::slice::from_ref(&cg),
        "HYBRID-FALLBACK-OK",
    );
}

/// A kernel without bpf(2) (or a seccomp profile that says so).
#[test]
fn hybrid_enosys_falls_back_to_v1_devices() {
    hybrid_fallback("ENOSYS", Refused::All);
}

/// A kernel without cgroup BPF: the program type is unknown to it.
#[test]
fn hybrid_einval_falls_back_to_v1_devices() {
    hybrid_fallback("EINVAL", Refused::All);
}

/// bpf(2) not permitted at all, as under Docker's default seccomp profile
/// (the runtime cannot even look at what is attached).
#[test]
fn hybrid_eperm_falls_back_to_v1_devices() {
    hybrid_fallback("EPERM", Refused::All);
}

/// Loading not permitted (an LSM's `prog_load` veto), querying still
/// works: the runtime sees that no program of its own is attached.
#[test]
fn hybrid_eperm_on_load_only_falls_back_to_v1_devices() {
    hybrid_fallback("EPERM", Refused::ProgLoad);
}

/// Helper: a container created while the kernel allowed device programs
/// has one of ours attached; an update refused by the kernel (loading,
/// with querying allowed) cannot replace it, so it fails naming the cgroup
/// instead of falling back: the old program stays and keeps refusing what
/// the new v1 list would allow (never looser than either). An update with
/// bpf(2) available then replaces it.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_hybrid_refusal_over_our_program() {
    let Some((cg, errno, which)) = helper_scenario() else {
        return;
    };
    let env = Env::new();
    let id = env.id("bpfstale");
    let bundle = env.bundle(&id, &device_sleeper(&cg, vec![tun_rule("r")]));
    let init = env.create(&id, &bundle);
    let dir = env.unified_cgroup_dir(&id);
    let first = our_program(&dir);
    env.runtime.start(&id).unwrap();

    let (updated, warnings) = with_bpf_refused(errno, which, || {
        env.runtime.update(&id, &tun_resources("rw"))
    });
    let err = updated.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("install device filter /{cg}")),
        "{msg}"
    );
    assert!(msg.contains(&errno_text(errno)), "{msg}");
    assert!(
        msg.contains(&format!("earlier device program (id {first})")),
        "{msg}"
    );
    assert_eq!(fallback_warnings(&warnings), Vec::<&String>::new());
    assert_eq!(our_programs(&dir), [first], "the program changed");
    // v1 took the new list, the old program still refuses writing.
    assert_has_lines(&v1_devices_list(&cg), &["c 10:200 rw"]);
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["r-ok", "w-denied"]);

    env.runtime.update(&id, &tun_resources("rw")).unwrap();
    let second = our_program(&dir);
    assert_ne!(second, first);
    let out = env.exec_sh(&id, TUN_PROBE);
    assert_has_lines(&out, &["w-ok", "rw-ok"]);

    env.runtime.delete(&id, true).unwrap();
    assert_eq!(init.wait().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert_no_cgroup(&cg);
    drop(env);
    helper_passed("HYBRID-STALE-OK");
}

#[test]
fn hybrid_refusal_over_an_earlier_program_is_an_error() {
    if !hybrid() {
        return;
    }
    let cg = unique("cg");
    run_helper(
        "helper_hybrid_refusal_over_our_program",
        &[
            (CG, &cg),
            (ERRNO, "EPERM"),
            (REFUSED, Refused::ProgLoad.name()),
        ],
        std::slice::from_ref(&cg),
        "HYBRID-STALE-OK",
    );
}

/// The refusals tried on a unified host, each in its own cgroup
/// `<base>-<n>`.
const UNIFIED_CASES: [(&str, Refused); 3] = [
    ("ENOSYS", Refused::All),
    ("EPERM", Refused::All),
    ("EINVAL", Refused::ProgLoad),
];

/// Helper: in a private mount namespace whose `/sys/fs/cgroup` is the
/// host's cgroup2 hierarchy (a unified host, to the runtime), a create
/// whose device program the kernel refuses fails with the cgroup error
/// naming the cgroup and the errno, logs no fallback warning, and leaves
/// nothing behind: no cgroup directory, no state directory (nor an entry
/// in the list), no process (the helper has no child at all), no mount.
#[test]
#[ignore = "helper process, run by its parent test with --ignored"]
fn helper_unified_refusal_is_an_error() {
    let Some(base) = is_helper(HELPER).then(|| std::env::var(CG).ok()).flatten() else {
        return;
    };
    enter_unified_view();

    let env = Env::new();
    for (n, (errno_name, which)) in UNIFIED_CASES.into_iter().enumerate() {
        let errno = errno_from_name(errno_name);
        let cg = format!("{base}-{n}");
        let id = env.id("bpfv2");
        let bundle = env.bundle(&id, &device_sleeper(&cg, vec![tun_rule("r")]));
        let (created, warnings) = with_bpf_refused(errno, which, || {
            env.runtime.create(&id, &bundle, CreateOptions::default())
        });
        let err = match created {
            Ok(init) => panic!("{errno_name}: created (pid {})", init.pid()),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::Io, "{errno_name}: {err}");
        let msg = err.to_string();
        // Loading is the first bpf(2) call; the kernel wrote no log.
        assert_eq!(
            msg,
            format!(
                "cgroup install device filter /{cg}: BPF_PROG_LOAD: {}",
                errno_text(errno)
            ),
            "{errno_name}"
        );
        assert_eq!(fallback_warnings(&warnings), Vec::<&String>::new());

        let dir = Path::new("/sys/fs/cgroup").join(&cg);
        assert!(!dir.exists(), "{errno_name}: {} left behind", dir.display());
        let state_root = env.dir.path().join("state");
        assert!(
            !state_root.join(&id).exists(),
            "{errno_name}: state dir left behind"
        );
        assert!(!env.runtime.list().unwrap().contains(&id), "{errno_name}");
        assert_eq!(
            env.runtime.state(&id).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // SAFETY: waitpid with WNOHANG on any child; no status wanted.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ECHILD)),
            "{errno_name}: a process was left"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let tmp = env.dir.path().to_string_lossy().into_owned();
        assert!(
            !mounts.lines().any(|l| l.contains(&tmp) || l.contains(&cg)),
            "{errno_name}: a mount was left:\n{mounts}"
        );
    }
    drop(env);
    helper_passed("UNIFIED-REFUSAL-OK");
}

#[test]
fn unified_refusal_is_an_error_and_leaves_nothing() {
    if !cgroup2_hierarchy() {
        return;
    }
    let base = unique("cg");
    let cgroups: Vec<String> = (0..UNIFIED_CASES.len())
        .map(|n| format!("{base}-{n}"))
        .collect();
    run_helper(
        "helper_unified_refusal_is_an_error",
        &[(CG, &base)],
        &cgroups,
        "UNIFIED-REFUSAL-OK",
    );
}
