//! Runs a shell command line under a pseudo-terminal harness (util-linux `script`), the way a
//! user at a terminal would, with a time limit.
//!
//! The harness is deterministic about four things that otherwise depend on the caller's
//! environment:
//!
//! - The shell `script` starts is always `/bin/sh` (it takes `$SHELL`, which CI leaves unset
//!   and a developer's session sets to bash).
//! - `TERM` is `xterm` when the caller has none (CI leaves it unset). A session on a terminal
//!   always has one, and terminal-aware clients (indicatif's progress bars through `console`)
//!   treat a terminal without `TERM` as one they must not draw on.
//! - The time limit uses `timeout --foreground`. Without `--foreground`, `timeout` moves the
//!   command into a background process group of the pty; under a shell that does not exec the
//!   last command (dash), that group is not orphaned, so the first `tcsetattr` (a terminal
//!   client going raw) stops the command with SIGTTOU and it hangs until the time limit.
//! - Nobody types: `script`'s stdin is a pipe held open, and silent, until `script` exits. Had
//!   it stdin at end of file (`/dev/null`), `script` would type the terminal's EOF character
//!   (^D) into the pty, and a client in raw mode (`podman run -it`, `ctr run -t`) reads it as
//!   a keystroke and forwards it to the container. That keystroke is not harmless: podman 4.3
//!   writes it to conmon's attach socket, and when the container exits before conmon has read
//!   it, conmon closes the socket with it unread, so the kernel resets the connection
//!   (`ECONNRESET`) and podman's next read fails without returning the container output still
//!   queued on its side. The output of a container that prints and exits at once is then lost
//!   (about one run in ten, with runc as with berth-runc). Tests that want input should write
//!   it themselves, not get it from the harness by accident.

use std::process::{Command, Output, Stdio};

/// Runs `line` with `/bin/sh -c` on a fresh pty that receives no input (its input is held
/// open and empty), killing it after `limit_secs`. Returns what the pty printed (stdout) and
/// the command's exit status.
pub fn run_under_pty(line: &str, limit_secs: u32) -> Output {
    let wrapped = format!(
        "timeout --foreground {limit_secs} /bin/sh -c {}",
        quote(line)
    );
    let mut child = Command::new("script")
        .args(["-qec", &wrapped, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env(
            "TERM",
            std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm".to_owned()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    // Taken so that `wait_with_output` does not close it: closed only once script has exited.
    let silent_input = child.stdin.take();
    let out = child.wait_with_output().expect("wait for script(1)");
    drop(silent_input);
    out
}

/// Quotes `s` as one single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
