//! The terminal checks shared by the remote `run -t` and `exec -t` tests: what a docker user
//! sees through `berth --address SOCKET VERB -t …`, driven under the CI-safe pty harness.
//! Test files that use it also declare `mod pty` (`common/pty.rs`) and `mod support`
//! (`common/berthd_support.rs`).

use crate::pty;
use crate::support::{Daemon, example_bin};

/// Runs `berth --address S VERB -t TARGET sh -c …` and then `VERB -t -i TARGET sh` under a
/// pty of `cols`×`rows` and asserts: the process has a tty on stdin and stdout, its window size
/// is ours, its exit code comes back (7); with `-i` too, keys we type reach it (exit 3).
/// `verb` is what comes before the flags (`"run --rm"`, `"exec"`), `target` after them (an
/// image, a container id).
pub fn assert_remote_terminal(d: &Daemon, verb: &str, target: &str, cols: u16, rows: u16) {
    let berth = example_bin("berth");
    let line = format!(
        "stty cols {cols} rows {rows}; {} --address {} {verb} -t {target} sh -c 'tty; test -t 0 && test -t 1 && echo both-ttys; stty size; exit 7'",
        berth.display(),
        d.socket().display()
    );
    let out = pty::run_under_pty(&line, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("both-ttys"), "{text}");
    assert!(
        text.contains(&format!("{rows} {cols}")),
        "the window size follows ours: {text}"
    );
    assert_eq!(out.status.code(), Some(7), "{text}");
    // -t -i: raw mode on our side, keys typed reach the process's terminal.
    let line = format!(
        "(sleep 2; printf 'echo typed-$((40+2))\\r'; sleep 1; printf 'exit 3\\r') | script -qec '{} --address {} {verb} -t -i {target} sh' /dev/null",
        berth.display(),
        d.socket().display()
    );
    let out = pty::run_under_pty(&line, 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("typed-42"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
}
