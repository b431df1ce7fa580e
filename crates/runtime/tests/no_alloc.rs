//! The setup children never allocate: this test binary's global allocator
//! kills any process other than the test process itself that allocates
//! (exit code 99, after printing a marker), so a single allocation between
//! clone and exec turns into a failed create/start/exec.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module,
    missing_docs
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, Ordering};

use berth_runtime::ExitStatus;
use berth_runtime::oci_spec::runtime::{
    HookBuilder, HooksBuilder, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};
use common::*;

static MAIN_PID: AtomicI32 = AtomicI32::new(0);

struct ChildAllocPolice;

impl ChildAllocPolice {
    fn check() {
        let main = MAIN_PID.load(Ordering::Relaxed);
        // SAFETY: getpid has no preconditions (and is not cached by glibc).
        if main != 0 && unsafe { libc::getpid() } != main {
            let msg = b"BERTH-TEST: allocation in a setup child\n";
            // SAFETY: write + _exit are async-signal-safe.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(99);
            }
        }
    }
}

// SAFETY: delegates to the system allocator after a check that only makes
// system calls.
unsafe impl GlobalAlloc for ChildAllocPolice {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::check();
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ChildAllocPolice = ChildAllocPolice;

#[test]
fn setup_children_do_not_allocate() {
    if !privileged() {
        return;
    }
    // SAFETY: getpid has no preconditions.
    MAIN_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    let env = Env::new();
    let id = env.id("noalloc");
    // Exercise the busy paths: seccomp, capabilities, rlimits, user switch,
    // masked/readonly paths, devices, a startContainer hook.
    let mut s = spec(&["sh", "-c", "echo ok"], &unique("cg"));
    let mut linux = s.linux().clone().unwrap();
    linux.set_seccomp(Some(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec!["mkdir".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    s.set_linux(Some(linux));
    s.set_hooks(Some(
        HooksBuilder::default()
            .start_container(vec![
                HookBuilder::default().path("/bin/true").build().unwrap(),
            ])
            .build()
            .unwrap(),
    ));
    let bundle = env.bundle(&id, &s);
    let (init, r) = env.create_piped(&id, &bundle);
    env.runtime
        .start(&id)
        .unwrap_or_else(|e| panic!("start: {e}"));
    assert_eq!(init.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r), "ok\n");
    env.runtime.delete(&id, false).unwrap();

    // And exec.
    let id = env.id("noalloc-exec");
    let bundle = env.bundle(&id, &spec(&["sleep", "1000"], &unique("cg")));
    let init = env.create(&id, &bundle);
    env.runtime.start(&id).unwrap();
    let p = process_builder(&["echo", "exec-ok"]).build().unwrap();
    let (child, r) = env.exec_piped(&id, &p);
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(0));
    assert_eq!(read_all(r), "exec-ok\n");
    env.runtime.delete(&id, true).unwrap();
    init.wait().unwrap();
    MAIN_PID.store(0, Ordering::Relaxed);
}
