//! Runs a shell command line under a pseudo-terminal harness (util-linux `script`), the way a
//! user at a terminal would, with a time limit.
//!
//! The harness is deterministic about two things that otherwise depend on the caller's
//! environment: the shell `script` starts is always `/bin/sh` (it takes `$SHELL`, which CI leaves
//! unset and a developer's session sets to bash), and the time limit uses `timeout
//! --foreground`. Without `--foreground`, `timeout` moves the command into a background process
//! group of the pty; under a shell that does not exec the last command (dash), that group is not
//! orphaned, so the first `tcsetattr` (a terminal client going raw) stops the command with
//! SIGTTOU and it hangs until the time limit.

use std::process::{Command, Output, Stdio};

/// Runs `line` with `/bin/sh -c` on a fresh pty whose input is at end of file, killing it
/// after `limit_secs`. Returns what the pty printed (stdout) and the command's exit status.
pub fn run_under_pty(line: &str, limit_secs: u32) -> Output {
    let wrapped = format!(
        "timeout --foreground {limit_secs} /bin/sh -c {}",
        quote(line)
    );
    Command::new("script")
        .args(["-qec", &wrapped, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)")
}

/// Quotes `s` as one single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
