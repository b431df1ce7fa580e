//! Layer tarballs from a directory: deterministic, compressed, digested while written.
//!
//! The tree is walked in byte order of names; every entry gets the same fixed mtime (by
//! default 0, or the one given), numeric owners from the file system (or forced), no user or
//! group names, and its permission bits including setuid/setgid/sticky. Hard links inside the
//! tree become tar hard-link entries; symlinks are stored, never followed; sockets are
//! skipped. The bytes pass through two digesters: one over the tar (the diffID) and one over
//! the compressed stream (the blob digest), so nothing is read twice. Compression is the
//! crate's [`Compressor`] (gzip with mtime 0 and no name, zstd with a checksum).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_oci::media_type::{self, Compression};
use berth_oci::{Algorithm, Digest, Digester};

use crate::compression::Compressor;
use crate::import::error::{Error, Result};

/// A written layer: what a manifest's layer descriptor and a config's `rootfs.diff_ids` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the diffID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type for the compression used.
    pub media_type: &'static str,
}

/// A writer that hashes and counts what passes through to `inner`.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) digester: Digester,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            digester: Digester::new(Algorithm::Sha256),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds a layer tarball from a directory. Configure with the builder methods, then call
/// [`LayerBuilder::write`].
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    compression: Compression,
    level: Option<i32>,
    mtime: u64,
    owner: Option<(u64, u64)>,
}

impl LayerBuilder {
    /// A builder for `compression` with the default level, mtime 0 and the files' owners.
    pub fn new(compression: Compression) -> Self {
        LayerBuilder {
            compression,
            level: None,
            mtime: 0,
            owner: None,
        }
    }

    /// Sets the compression level (gzip 0–9, zstd 1–22); out-of-range values are clamped.
    pub fn level(mut self, level: i32) -> Self {
        self.level = Some(level);
        self
    }

    /// Sets the modification time (seconds since the epoch) written for every entry.
    pub fn mtime(mut self, secs: u64) -> Self {
        self.mtime = secs;
        self
    }

    /// Writes every entry as owned by `uid:gid` instead of the files' owners.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// The media type of the layers this builder writes.
    pub fn media_type(&self) -> &'static str {
        media_type::oci_layer(self.compression)
    }

    /// Writes the tree under `dir` (its root becomes the layer's root) to `out`, compressed.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that could not be read, or the output.
    pub fn write<W: Write>(&self, dir: &Path, out: W) -> Result<LayerInfo> {
        let out_err = |e| Error::io("write layer", dir, e);
        let compressed = HashingWriter::new(out);
        let encoder = Compressor::new(compressed, self.compression, self.level).map_err(out_err)?;
        let mut tar = tar::Builder::new(HashingWriter::new(encoder));
        self.append_tree(&mut tar, dir)?;
        tar.finish().map_err(out_err)?;
        let uncompressed = tar.into_inner().map_err(out_err)?;
        let diff_len = uncompressed.digester.len();
        let diff_id = uncompressed.digester.finalize();
        let mut compressed = uncompressed.inner.finish().map_err(out_err)?;
        compressed.flush().map_err(out_err)?;
        let size = compressed.digester.len();
        Ok(LayerInfo {
            digest: compressed.digester.finalize(),
            size,
            diff_id,
            uncompressed_size: diff_len,
            media_type: self.media_type(),
        })
    }

    fn append_tree<W: Write>(&self, tar: &mut tar::Builder<W>, dir: &Path) -> Result<()> {
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by(|a, b| {
                a.file_name()
                    .as_encoded_bytes()
                    .cmp(b.file_name().as_encoded_bytes())
            })
            .min_depth(1);
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(dir).to_path_buf();
                Error::io("walk", path, e.into())
            })?;
            let full = entry.path();
            let rel = full.strip_prefix(dir).map_err(|_| Error::InvalidArgument {
                what: full.display().to_string(),
                reason: "outside the layer root".into(),
            })?;
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("lstat", full, e.into()))?;
            let io_err = |e| Error::io("append to layer", full, e);
            let ft = meta.file_type();
            let mut header = tar::Header::new_gnu();
            header.set_mtime(self.mtime);
            header.set_mode(meta.mode() & 0o7777);
            let (uid, gid) = self
                .owner
                .unwrap_or((u64::from(meta.uid()), u64::from(meta.gid())));
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_size(0);
            if ft.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
                let mut name = rel.as_os_str().to_owned();
                name.push("/");
                tar.append_data(&mut header, Path::new(&name), io::empty())
                    .map_err(io_err)?;
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(full).map_err(|e| Error::io("readlink", full, e))?;
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, rel, &target).map_err(io_err)?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = links.get(&key) {
                        header.set_entry_type(tar::EntryType::Link);
                        tar.append_link(&mut header, rel, first).map_err(io_err)?;
                        continue;
                    }
                    links.insert(key, rel.to_path_buf());
                }
                let file = File::open(full).map_err(|e| Error::io("open", full, e))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                tar.append_data(&mut header, rel, io::Read::take(file, meta.len()))
                    .map_err(io_err)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                header.set_entry_type(kind);
                let rdev = meta.rdev();
                header
                    .set_device_major(rustix::fs::major(rdev))
                    .map_err(io_err)?;
                header
                    .set_device_minor(rustix::fs::minor(rdev))
                    .map_err(io_err)?;
                tar.append_data(&mut header, rel, io::empty())
                    .map_err(io_err)?;
            }
            // Sockets and anything else cannot be carried in a layer: skipped.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        symlink("tool", root.join("bin/sh")).unwrap();
        std::fs::hard_link(root.join("bin/tool"), root.join("bin/tool2")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        dir
    }

    #[test]
    fn deterministic_and_digests_match_bytes() {
        let dir = tree();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let b = LayerBuilder::new(compression).owner(0, 0);
            let mut first = Vec::new();
            let info = b.write(dir.path(), &mut first).unwrap();
            let mut second = Vec::new();
            assert_eq!(b.write(dir.path(), &mut second).unwrap(), info);
            assert_eq!(first, second, "{compression:?}");
            assert_eq!(info.digest, Digest::sha256(&first));
            assert_eq!(info.size, first.len() as u64);
            let tar_bytes = match compression {
                Compression::None => first.clone(),
                Compression::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&first[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                Compression::Zstd => zstd::decode_all(&first[..]).unwrap(),
            };
            assert_eq!(info.diff_id, Digest::sha256(&tar_bytes));
            assert_eq!(info.uncompressed_size, tar_bytes.len() as u64);
        }
    }

    #[test]
    fn entries_are_sorted_with_links() {
        let dir = tree();
        let mut out = Vec::new();
        LayerBuilder::new(Compression::None)
            .mtime(42)
            .write(dir.path(), &mut out)
            .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 42);
            let kind = e.header().entry_type();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            seen.push((e.path().unwrap().display().to_string(), kind, link));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/sh",
                "bin/tool",
                "bin/tool2",
                "etc/",
                "etc/passwd"
            ]
        );
        assert_eq!(seen[1].1, tar::EntryType::Symlink);
        assert_eq!(seen[1].2.as_deref(), Some("tool"));
        assert_eq!(seen[3].1, tar::EntryType::Link);
        assert_eq!(seen[3].2.as_deref(), Some("bin/tool"));
    }
}
