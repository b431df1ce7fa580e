//! Readers for the cgroupfs interface-file formats.
//!
//! The kernel's conventions (Documentation/admin-guide/cgroup-v2.rst, "Conventions"; the v1
//! controllers use the same shapes): a single value, newline-separated values, space-separated
//! values, flat keyed (`key value`), and nested keyed (`key sub=value sub=value`). The literal
//! `max` stands for "no limit".
//!
//! Every reader distinguishes a **missing** file (`Ok(None)`: the controller is not enabled, the
//! kernel is too old, or the cgroup went away — `ENOENT`, `ENODEV`, `ENOTDIR`) from **malformed**
//! content (`Err(MetricsError::Parse)` naming the file). Files are opened by `std::fs`, which
//! always sets `O_CLOEXEC`.

use std::path::Path;

use crate::error::{MetricsError, Result};

/// The value the crate stores for a v2 `max` limit (containerd uses the same convention).
pub const UNLIMITED: u64 = u64::MAX;

/// Initial size of the per-thread read buffer (most cgroup files are far smaller).
const READ_BUF: usize = 16 * 1024;

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads the whole file at `path` into `buf` (resized as needed) and returns its length;
/// `Ok(None)` when it (or its cgroup) does not exist. Goes through this thread's
/// [`crate::fdcache::OpenFiles`] when one is set.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<Option<usize>> {
    if let Some(cache) = crate::fdcache::current() {
        return cache.read(path, buf);
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(source) => {
            return Err(MetricsError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    read_file_at(&file, path, buf)
}

/// Reads all of `file` from offset 0 with `pread(2)` into `buf`; `Ok(None)` when its cgroup
/// is gone (`ENODEV`/`ENOENT`).
///
/// A read shorter than the space offered is taken as end of file, which saves the second,
/// empty read: cgroupfs (kernfs `seq_file`) fills the whole buffer unless the content is
/// exhausted, and so do regular files (the fixture trees). Reading at offset 0 makes a
/// `seq_file` regenerate its content, which is what lets [`crate::fdcache`] re-read open fds.
pub(crate) fn read_file_at(
    file: &std::fs::File,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<Option<usize>> {
    use std::os::unix::fs::FileExt;
    if buf.len() < READ_BUF {
        buf.resize(READ_BUF, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let want = buf.len() - len;
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if n < want {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if is_missing(&e) => return Ok(None),
            Err(source) => {
                return Err(MetricsError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(Some(len))
}

/// Reads the file at `path` and hands its text to `parse`; `Ok(None)` when the file (or its
/// cgroup) does not exist. Uses a per-thread buffer, so no allocation per file.
pub(crate) fn read_with<T, F>(path: &Path, parse: F) -> Result<Option<T>>
where
    F: FnOnce(&str) -> Result<T>,
{
    fn run<T, F>(path: &Path, buf: &mut Vec<u8>, parse: F) -> Result<Option<T>>
    where
        F: FnOnce(&str) -> Result<T>,
    {
        let Some(len) = read_into(path, buf)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&buf[..len])
            .map_err(|_| MetricsError::parse(path, 0, "content is not UTF-8"))?;
        parse(text).map(Some)
    }
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run(path, &mut buf, parse),
        // Re-entered from inside a parser: use a private buffer.
        Err(_) => run(path, &mut Vec::new(), parse),
    })
}

/// Reads a whole file as a `String`; `Ok(None)` when it (or its cgroup) does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    read_with(path, |s| Ok(s.to_string()))
}

/// True for the errors that mean "this file or its cgroup is not there".
pub(crate) fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENOTDIR) | Some(libc::ESRCH)
    ) || e.kind() == std::io::ErrorKind::NotFound
}

/// Parses a decimal `u64`, reporting `path`/`line` on failure.
pub(crate) fn parse_u64(path: &Path, line: usize, s: &str) -> Result<u64> {
    s.parse::<u64>()
        .map_err(|_| MetricsError::parse(path, line, format!("not an unsigned integer: {s:?}")))
}

/// Parses a value that may be the literal `max` (→ [`UNLIMITED`]).
pub(crate) fn parse_limit(path: &Path, line: usize, s: &str) -> Result<u64> {
    if s == "max" {
        Ok(UNLIMITED)
    } else {
        parse_u64(path, line, s)
    }
}

/// Reads a single-value file holding an unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>> {
    read_with(path, |text| parse_u64(path, 1, text.trim()))
}

/// Reads a single-value file holding an unsigned integer or `max`.
pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>> {
    read_with(path, |text| parse_limit(path, 1, text.trim()))
}

/// Reads space-separated unsigned integers (`cpuacct.usage_percpu`).
pub(crate) fn read_u64_list(path: &Path) -> Result<Option<Vec<u64>>> {
    read_with(path, |text| {
        text.split_ascii_whitespace()
            .map(|v| parse_u64(path, 1, v))
            .collect::<Result<Vec<_>>>()
    })
}

/// Calls `f(key, value)` for every `key value` line of a flat-keyed file.
pub(crate) fn for_each_flat(path: &Path, text: &str, mut f: impl FnMut(&str, u64)) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(MetricsError::parse(path, i + 1, "expected `key value`"));
        };
        f(key, parse_u64(path, i + 1, value)?);
    }
    Ok(())
}

/// Reads a flat-keyed file and calls `f` for each entry; `Ok(false)` when the file is missing.
pub(crate) fn read_flat(path: &Path, f: impl FnMut(&str, u64)) -> Result<bool> {
    Ok(read_with(path, |text| for_each_flat(path, text, f))?.is_some())
}

/// Splits a nested-keyed line (`key a=1 b=2`) into its key and `(sub, value)` pairs.
pub(crate) fn nested_line<'a>(
    path: &Path,
    line_no: usize,
    line: &'a str,
) -> Result<(&'a str, Vec<(&'a str, &'a str)>)> {
    let mut parts = line.split_ascii_whitespace();
    let key = parts
        .next()
        .ok_or_else(|| MetricsError::parse(path, line_no, "empty line"))?;
    let mut pairs = Vec::with_capacity(8);
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| MetricsError::parse(path, line_no, format!("expected k=v: {part:?}")))?;
        pairs.push((k, v));
    }
    Ok((key, pairs))
}

/// Parses `MAJ:MIN`.
pub(crate) fn parse_dev(path: &Path, line: usize, s: &str) -> Result<(u64, u64)> {
    let (maj, min) = s
        .split_once(':')
        .ok_or_else(|| MetricsError::parse(path, line, format!("expected MAJ:MIN: {s:?}")))?;
    Ok((parse_u64(path, line, maj)?, parse_u64(path, line, min)?))
}

/// Names of the entries of `dir` starting with `prefix` and ending with `suffix`, with both
/// removed (`hugetlb.2MB.current` → `2MB`), sorted; `Ok(None)` when `dir` is missing.
pub(crate) fn list_infix(dir: &Path, prefix: &str, suffix: &str) -> Result<Option<Vec<String>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(source) => {
            return Err(MetricsError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(source) => {
                return Err(MetricsError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(mid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            && !mid.is_empty()
            && !mid.contains('.')
        {
            out.push(mid.to_string());
        }
    }
    out.sort_by_key(|size| page_size_bytes(size).unwrap_or(u64::MAX));
    Ok(Some(out))
}

/// Converts a hugetlb page-size label (`2MB`, `1GB`, `64KB`) into bytes.
pub fn page_size_bytes(label: &str) -> Option<u64> {
    let split = label.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = label.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_parses_and_rejects_garbage() {
        let p = Path::new("/f/memory.events");
        let mut seen = Vec::new();
        for_each_flat(p, "low 1\nhigh 2\n\n", |k, v| seen.push((k.to_string(), v))).unwrap();
        assert_eq!(seen, vec![("low".into(), 1), ("high".into(), 2)]);
        let err = for_each_flat(p, "low 1\nhigh x\n", |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(for_each_flat(p, "low 1 2\n", |_, _| {}).is_err());
    }

    #[test]
    fn limits_and_devices() {
        let p = Path::new("/f");
        assert_eq!(parse_limit(p, 1, "max").unwrap(), UNLIMITED);
        assert_eq!(parse_limit(p, 1, "4096").unwrap(), 4096);
        assert!(parse_limit(p, 1, "-1").is_err());
        assert_eq!(parse_dev(p, 1, "8:16").unwrap(), (8, 16));
        assert!(parse_dev(p, 1, "8-16").is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_bytes("2MB"), Some(2 << 20));
        assert_eq!(page_size_bytes("1GB"), Some(1 << 30));
        assert_eq!(page_size_bytes("64KB"), Some(64 << 10));
        assert_eq!(page_size_bytes("MB"), None);
        assert_eq!(page_size_bytes("2XB"), None);
    }

    #[test]
    fn missing_files_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_u64(&dir.path().join("nope")).unwrap(), None);
        assert_eq!(read_limit(&dir.path().join("nope/deeper")).unwrap(), None);
        assert_eq!(
            list_infix(&dir.path().join("gone"), "a", "b").unwrap(),
            None
        );
        std::fs::write(dir.path().join("v"), "12\n").unwrap();
        assert_eq!(read_u64(&dir.path().join("v")).unwrap(), Some(12));
        std::fs::write(dir.path().join("bad"), "twelve\n").unwrap();
        assert!(read_u64(&dir.path().join("bad")).is_err());
    }

    #[test]
    fn large_files_and_nested_reads() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..5000).map(|i| format!("key{i} {i}\n")).collect();
        assert!(big.len() > 3 * READ_BUF);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), "7\n").unwrap();
        let mut n = 0u64;
        assert!(read_flat(&dir.path().join("big"), |_, v| n += v).unwrap());
        assert_eq!(n, (0..5000).sum::<u64>());
        // A parser that reads another file falls back to a private buffer.
        let inner = read_with(&dir.path().join("small"), |outer| {
            let v = read_u64(&dir.path().join("small"))?;
            Ok((outer.trim().to_string(), v))
        })
        .unwrap();
        assert_eq!(inner, Some(("7".to_string(), Some(7))));
        std::fs::write(dir.path().join("latin1"), [0xffu8, 0xfe]).unwrap();
        assert!(read_optional(&dir.path().join("latin1")).is_err());
    }
}
