//! startContainer hooks: run by the container's init, inside the
//! container, after `start` and before the user program is exec'd.
//!
//! Everything is prepared before the clone ([`StartHook`]); the init runs
//! each hook with a raw fork-style clone, feeds it the state JSON on stdin
//! (the runtime-side pid is spliced in without allocating), and waits with
//! a pidfd and `poll` so a hook's `timeout` is enforced.

use std::ffi::{CString, c_char};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::sys::{self, SysResult};

/// One prepared startContainer hook.
#[derive(Debug)]
pub(crate) struct StartHook {
    pub(crate) path: CString,
    pub(crate) display: String,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    /// Milliseconds, or -1 for none.
    timeout_ms: i32,
}

/// The state JSON with the pid left out: `prefix` + pid digits + `suffix`.
#[derive(Debug, Default)]
pub(crate) struct StateJson {
    pub(crate) prefix: Vec<u8>,
    pub(crate) suffix: Vec<u8>,
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::spec("hooks.startContainer", "contains a NUL byte"))
}

impl StartHook {
    pub(crate) fn new(h: &Hook) -> Result<StartHook> {
        let path = h.path().to_string_lossy().into_owned();
        let mut args: Vec<String> = h.args().clone().unwrap_or_default();
        if args.is_empty() {
            args.push(path.clone());
        }
        let argv = args.iter().map(|a| cstr(a)).collect::<Result<Vec<_>>>()?;
        let envp = h
            .env()
            .iter()
            .flatten()
            .map(|e| cstr(e))
            .collect::<Result<Vec<_>>>()?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let timeout_ms = match h.timeout() {
            Some(t) if t > 0 => i32::try_from(t.saturating_mul(1000)).unwrap_or(i32::MAX),
            _ => -1,
        };
        Ok(StartHook {
            path: cstr(&path)?,
            display: path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            timeout_ms,
        })
    }

    /// Runs the hook and waits for it. Async-signal-safe. `Err(errno)`:
    /// `ETIMEDOUT` when it outran its timeout, `ECANCELED` when it exited
    /// non-zero or was killed, or the errno of a failed system call.
    pub(crate) fn run(&self, json: &StateJson, pid: i32) -> SysResult<()> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        let (r, w) = (fds[0], fds[1]);
        // SAFETY: the child only makes system calls on prepared data and
        // leaves with execve or _exit.
        let child = match unsafe { crate::spawn::clone_raw(0) } {
            Ok(0) => {
                crate::spawn::child::reset_signals();
                // SAFETY: dup2/execve on prepared data.
                unsafe {
                    libc::dup2(r, 0);
                    libc::execve(
                        self.path.as_ptr(),
                        self.argv_ptrs.as_ptr(),
                        self.envp_ptrs.as_ptr(),
                    );
                }
                sys::exit_child(127)
            }
            Ok(pid) => pid,
            Err(e) => {
                sys::close(r);
                sys::close(w);
                return Err(e);
            }
        };
        sys::close(r);
        // A hook that does not read its stdin gives EPIPE here (init ignores
        // SIGPIPE until just before exec).
        let mut digits = [0u8; 12];
        let _ = sys::write_all(w, &json.prefix)
            .and_then(|()| sys::write_all(w, format_pid(pid, &mut digits)))
            .and_then(|()| sys::write_all(w, &json.suffix));
        sys::close(w);

        // SAFETY: pidfd_open with plain integers.
        let pidfd = sys::cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) })? as i32;
        let mut pfd = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = loop {
            // SAFETY: pfd is a valid pollfd array of length 1.
            let n = unsafe { libc::poll(&mut pfd, 1, self.timeout_ms) };
            if n >= 0 {
                break n > 0;
            }
            if sys::errno() != libc::EINTR {
                break false;
            }
        };
        sys::close(pidfd);
        if !ready {
            // SAFETY: killing our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        if !ready {
            return Err(libc::ETIMEDOUT);
        }
        if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
            Ok(())
        } else {
            Err(libc::ECANCELED)
        }
    }
}

/// Formats `pid` in decimal into `buf` without allocating.
fn format_pid(pid: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut n = pid.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 1 {
            break;
        }
    }
    if pid < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Splits the serialized state around its pid.
pub(crate) fn state_json(state: &crate::state::ContainerState) -> Result<StateJson> {
    const MARK: i32 = -1_234_567_891;
    let mut st = state.to_oci();
    st.pid = Some(MARK);
    let text = serde_json::to_string(&st).map_err(|e| Error::spec("state", e.to_string()))?;
    let mark = MARK.to_string();
    let at = text
        .find(&mark)
        .ok_or_else(|| Error::protocol("state JSON lost its pid marker"))?;
    Ok(StateJson {
        prefix: text.as_bytes()[..at].to_vec(),
        suffix: text.as_bytes()[at + mark.len()..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_without_allocation() {
        let mut b = [0u8; 12];
        assert_eq!(format_pid(0, &mut b), b"0");
        assert_eq!(format_pid(1234, &mut b), b"1234");
        assert_eq!(format_pid(i32::MAX, &mut b), b"2147483647");
        assert_eq!(format_pid(-5, &mut b), b"-5");
    }
}
