//! The audit log: one JSON line per mutating call (time, caller uid and pid, operation,
//! object, result), appended to a file rotated like kube-apiserver's
//! (`--audit-log-maxsize` MB, `--audit-log-maxbackup` files, `--audit-log-maxage` days).
//!
//! Rotation renames `audit.log` to `audit-<UTC time>.log` (a counter suffix keeps names
//! unique) once the next line would pass `maxsize`, then prunes backups beyond `maxbackup`
//! (oldest first) and those older than `maxage` days. A limit of 0 disables it. Writes are
//! serialised by a mutex; each line is one `write(2)` on an `O_APPEND` file.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Rotation limits (0 = unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    /// Rotate once the file would pass this many bytes.
    pub max_size: u64,
    /// Keep at most this many backups.
    pub max_backups: usize,
    /// Remove backups older than this.
    pub max_age: Option<Duration>,
}

/// One audit record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// The caller's uid (SO_PEERCRED), if known.
    pub uid: Option<u32>,
    /// The caller's pid (SO_PEERCRED), if known.
    pub pid: Option<i32>,
    /// The RPC, e.g. `containers.kill`.
    pub operation: &'a str,
    /// The image, snapshot or container concerned.
    pub object: &'a str,
    /// `ok`, or the error's gRPC code and message.
    pub result: String,
}

/// An append-only, size-rotated audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotation: Rotation,
    file: Mutex<Option<(File, u64)>>,
    counter: std::sync::atomic::AtomicU64,
}

fn open(path: &Path) -> Result<(File, u64)> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening the audit log {}", path.display()))?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

impl AuditLog {
    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> Result<AuditLog> {
        let file = open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            rotation,
            file: Mutex::new(Some(file)),
            counter: Default::default(),
        })
    }

    /// Appends `entry`, rotating first when needed. Errors are reported on stderr: an
    /// audit failure must not fail the call it records (the call already happened).
    pub fn append(&self, entry: &Entry<'_>) {
        if let Err(e) = self.try_append(entry) {
            eprintln!("berthd: audit log: {e:#}");
        }
    }

    fn try_append(&self, entry: &Entry<'_>) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .map_err(|_| anyhow::anyhow!("audit lock poisoned"))?;
        if guard.is_none() {
            *guard = Some(open(&self.path)?);
        }
        let size = guard.as_ref().map_or(0, |(_, n)| *n);
        if self.rotation.max_size > 0
            && size > 0
            && size + line.len() as u64 > self.rotation.max_size
        {
            *guard = None;
            self.rotate()?;
            *guard = Some(open(&self.path)?);
        }
        if let Some((f, n)) = guard.as_mut() {
            f.write_all(&line)?;
            *n += line.len() as u64;
        }
        Ok(())
    }

    /// The backups, oldest first.
    pub fn backups(&self) -> Result<Vec<PathBuf>> {
        let dir = self
            .path
            .parent()
            .context("audit log without a directory")?;
        let stem = self.stem();
        let mut out: Vec<(SystemTime, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{stem}-")) && name.ends_with(".log") {
                out.push((e.metadata()?.modified()?, e.path()));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    fn stem(&self) -> String {
        self.path
            .file_stem()
            .map_or_else(|| "audit".to_owned(), |s| s.to_string_lossy().into_owned())
    }

    fn rotate(&self) -> Result<()> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ms = crate::now_millis();
        let backup = self.path.with_file_name(format!(
            "{}-{}-{n}.log",
            self.stem(),
            crate::rfc3339_millis(ms).replace(':', "")
        ));
        std::fs::rename(&self.path, &backup)
            .with_context(|| format!("rotating {}", self.path.display()))?;
        let mut backups = self.backups()?;
        if let Some(age) = self.rotation.max_age {
            let now = SystemTime::now();
            backups.retain(|p| {
                let old = std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
                if old {
                    let _ = std::fs::remove_file(p);
                }
                !old
            });
        }
        if self.rotation.max_backups > 0 && backups.len() > self.rotation.max_backups {
            let excess = backups.len() - self.rotation.max_backups;
            for p in &backups[..excess] {
                std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }
}
