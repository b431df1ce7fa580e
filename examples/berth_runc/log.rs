//! Runtime logs, written as runc (logrus) writes them.
//!
//! Callers read them: containerd's shim passes `--log <bundle>/log.json --log-format json` and,
//! when a command fails, takes the `msg` of the last `"level":"error"` line of that file as the
//! error; conmon does the same with its own log path. So every failure is logged as one line
//! in the requested format, and, as runc does, also printed plainly on stderr when the log goes
//! to a file.
//!
//! The logger is process-global (one command per process) and set once by [`init`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::LogFormat;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Details shown only with `--debug`.
    Debug,
    /// Something worth knowing that did not fail the command.
    Warning,
    /// The command failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug)]
struct Logger {
    format: LogFormat,
    debug: bool,
    /// `None`: stderr.
    file: Option<Mutex<File>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Opens the log (`path`, appended to, or stderr) with the given format.
///
/// Errors: the log file cannot be opened (the caller reports it on stderr).
pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(Mutex::new(
            OpenOptions::new().create(true).append(true).open(p)?,
        )),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        format,
        debug,
        file,
    });
    Ok(())
}

/// Whether the log goes to a file (then errors are printed on stderr as well).
pub fn to_file() -> bool {
    LOGGER.get().is_some_and(|l| l.file.is_some())
}

/// Writes one log line (a debug line only with `--debug`). Logging never fails a command.
pub fn log(level: Level, msg: &str) {
    let default = Logger {
        format: LogFormat::Text,
        debug: false,
        file: None,
    };
    let logger = LOGGER.get().unwrap_or(&default);
    if level == Level::Debug && !logger.debug {
        return;
    }
    let line = format_line(logger.format, level, msg, SystemTime::now());
    match &logger.file {
        Some(file) => {
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Logs a failure of the command: one error line in the log, and the bare message on stderr
/// when the log is a file (what runc's `fatal` does).
pub fn fatal(msg: &str) {
    log(Level::Error, msg);
    if to_file() {
        eprintln!("{msg}");
    }
}

/// Formats one log line, newline included.
pub fn format_line(format: LogFormat, level: Level, msg: &str, at: SystemTime) -> String {
    let time = rfc3339(at, false);
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({ "level": level.as_str(), "msg": msg, "time": time });
            format!("{line}\n")
        }
        LogFormat::Text => {
            let quoted = serde_json::Value::String(msg.to_owned());
            format!("time=\"{time}\" level={} msg={quoted}\n", level.as_str())
        }
    }
}

/// Formats a time as RFC 3339 in UTC (`2026-11-26T05:41:12Z`), with nanoseconds if asked
/// (`2026-11-26T05:41:12.123456789Z`, Go's RFC3339Nano without trailing zeros).
pub fn rfc3339(at: SystemTime, nanos: bool) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let frac = since.subsec_nanos();
    if nanos && frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::new(1_795_671_672, 120_000_000);
        assert_eq!(rfc3339(t, false), "2026-11-26T05:41:12Z");
        assert_eq!(rfc3339(t, true), "2026-11-26T05:41:12.12Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), false),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn json_line_is_what_containerd_parses() {
        let line = format_line(
            LogFormat::Json,
            Level::Error,
            "no \"such\" container",
            UNIX_EPOCH,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "no \"such\" container");
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_line_is_logrus_shaped() {
        let line = format_line(LogFormat::Text, Level::Warning, "a b", UNIX_EPOCH);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00Z\" level=warning msg=\"a b\"\n"
        );
    }
}
