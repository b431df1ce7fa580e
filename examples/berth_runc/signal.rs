//! Signal names and numbers as `runc kill` accepts them.
//!
//! `TERM`, `SIGTERM`, `term` and `15` all name SIGTERM; any number from 1 to the highest real-time
//! signal is accepted as is (containerd's shim sends numbers, people send names).

use std::str::FromStr;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

/// Parses a signal given by name (with or without `SIG`, any case) or number.
///
/// Errors: an unknown name or a number outside 1..=SIGRTMAX.
pub fn parse_signal(text: &str) -> Result<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        if n < 1 || n > libc::SIGRTMAX() {
            bail!("invalid signal number: {n}");
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = name.strip_prefix("RTMIN") {
        return realtime(libc::SIGRTMIN(), rt, 1, text);
    }
    if let Some(rt) = name.strip_prefix("RTMAX") {
        return realtime(libc::SIGRTMAX(), rt, -1, text);
    }
    match Signal::from_str(&format!("SIG{name}")) {
        Ok(sig) => Ok(sig as i32),
        Err(_) => bail!("unknown signal {text:?}"),
    }
}

/// `RTMIN+n` / `RTMAX-n`.
fn realtime(base: i32, offset: &str, direction: i32, text: &str) -> Result<i32> {
    let n = if offset.is_empty() {
        0
    } else {
        let digits = if direction > 0 {
            offset.strip_prefix('+')
        } else {
            offset.strip_prefix('-')
        };
        match digits.and_then(|d| d.parse::<i32>().ok()) {
            Some(n) => n,
            None => bail!("unknown signal {text:?}"),
        }
    };
    let sig = base + direction * n;
    if sig < libc::SIGRTMIN() || sig > libc::SIGRTMAX() {
        bail!("unknown signal {text:?}");
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("hup").unwrap(), libc::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse_signal("SIGRTMAX").unwrap(), libc::SIGRTMAX());
    }

    #[test]
    fn rejects_unknown() {
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("RTMIN+99").is_err());
    }
}
