//! Helper processes. A test that must change process-wide state (its
//! mount namespace, a seccomp filter) does it in a child: its own test
//! binary run again on one `#[ignore]`d helper test, with an environment
//! variable that tells the helper it was started by its parent (run
//! directly, by `--ignored`, it returns at once). The helper prints a
//! marker line when every assertion held and exits; the parent asserts
//! both, so a helper that did not run its checks cannot pass.

use std::process::Command;

/// A command that runs only the `#[ignore]`d test `name` of this test
/// binary, its output uncaptured; the caller adds the helper's environment.
pub fn helper_command(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Runs the `#[ignore]`d test `name` of this test binary in a child
/// process with `var=1` and `env` set; asserts that it exited 0 and printed
/// `marker` (else panics with its status, stdout and stderr).
pub fn run_helper_test(var: &str, name: &str, env: &[(&str, &str)], marker: &str) {
    let out = helper_command(name)
        .env(var, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(marker),
        "helper {name} {env:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// True in a helper process started by [`run_helper_test`] with `var`.
pub fn is_helper(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

/// Ends a helper whose checks all held: prints `marker` for the parent and
/// exits 0 at once. `exit` skips destructors: drop the guards (the `Env`
/// with its temp dir) before calling this.
pub fn helper_passed(marker: &str) -> ! {
    println!("{marker}");
    #[allow(clippy::exit)]
    std::process::exit(0)
}
