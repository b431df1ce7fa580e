//! Pressure stall information (`cpu.pressure`, `memory.pressure`, `io.pressure`).
//!
//! Format (Documentation/accounting/psi.rst):
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//! PSI is accounted on the cgroup2 hierarchy whatever controllers are enabled there, so on a
//! hybrid host these files exist in the unified tree even though cpu/memory/io are v1.

use std::path::Path;

use crate::error::{MetricsError, Result};
use crate::files::{nested_line, parse_u64, read_with};
use crate::types::{Pressure, PsiData, PsiStats};

/// Parses the text of one PSI file (`path` is only used in errors).
pub fn parse_psi(path: &Path, text: &str) -> Result<PsiStats> {
    let mut stats = PsiStats::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, pairs) = nested_line(path, i + 1, line)?;
        let mut data = PsiData::default();
        let mut seen = 0u8;
        for (k, v) in pairs {
            let float = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| MetricsError::parse(path, i + 1, format!("bad {k}={v}")))
            };
            match k {
                "avg10" => (data.avg10, seen) = (float(v)?, seen | 1),
                "avg60" => (data.avg60, seen) = (float(v)?, seen | 2),
                "avg300" => (data.avg300, seen) = (float(v)?, seen | 4),
                "total" => (data.total, seen) = (parse_u64(path, i + 1, v)?, seen | 8),
                _ => {}
            }
        }
        if seen != 15 {
            return Err(MetricsError::parse(
                path,
                i + 1,
                "expected avg10, avg60, avg300 and total",
            ));
        }
        match key {
            "some" => stats.some = Some(data),
            "full" => stats.full = Some(data),
            other => {
                return Err(MetricsError::parse(
                    path,
                    i + 1,
                    format!("unknown PSI line {other:?}"),
                ));
            }
        }
    }
    Ok(stats)
}

/// Reads one PSI file; `Ok(None)` when it is missing (or, as on kernels booted with
/// `psi=0`, unreadable with `EOPNOTSUPP`).
pub fn read_psi(path: &Path) -> Result<Option<PsiStats>> {
    match read_with(path, |text| parse_psi(path, text)) {
        Ok(v) => Ok(v),
        Err(MetricsError::Io { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads the three PSI files of a cgroup2 directory; `Ok(None)` when none exists.
pub fn read_pressure(dir: &Path) -> Result<Option<Pressure>> {
    let pressure = Pressure {
        cpu: read_psi(&dir.join("cpu.pressure"))?,
        memory: read_psi(&dir.join("memory.pressure"))?,
        io: read_psi(&dir.join("io.pressure"))?,
    };
    if pressure.cpu.is_none() && pressure.memory.is_none() && pressure.io.is_none() {
        Ok(None)
    } else {
        Ok(Some(pressure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                    full avg10=0.00 avg60=0.10 avg300=0.02 total=42\n";
        let s = parse_psi(Path::new("/c/memory.pressure"), text).unwrap();
        assert_eq!(
            s.some,
            Some(PsiData {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0,
                total: 123456
            })
        );
        assert_eq!(s.full.unwrap().total, 42);
    }

    #[test]
    fn cpu_pressure_without_full_line() {
        let s = parse_psi(
            Path::new("/c/cpu.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!(s.some.unwrap().total, 7);
        assert!(s.full.is_none());
    }

    #[test]
    fn malformed_lines_name_the_file() {
        let p = Path::new("/c/io.pressure");
        for bad in [
            "some avg10=x avg60=0 avg300=0 total=1",
            "some avg10=0 avg60=0 avg300=0",
            "half avg10=0 avg60=0 avg300=0 total=1",
            "some avg10=0 avg60=0 avg300=0 total=-1",
            "some avg10",
        ] {
            let err = parse_psi(p, bad).unwrap_err();
            assert!(err.to_string().contains("/c/io.pressure"), "{bad}: {err}");
        }
    }
}
