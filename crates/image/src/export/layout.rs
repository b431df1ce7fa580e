//! Writing OCI image layout directories: `oci-layout`, `blobs/<alg>/<hex>`, `index.json`.
//!
//! Blobs are written to a temporary file in their directory, fsynced and renamed into place,
//! so a blob file is either absent or complete; `index.json` is replaced the same way, last.
//! Opening an existing layout keeps its entries: adding an image whose name is already listed
//! replaces that entry.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_oci::Digest;
use berth_oci::media_type::OCI_INDEX;

use crate::build::layer::HashingWriter;
use crate::import::error::{Error, Result};
use crate::import::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::metadata::Descriptor;

/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A writer of one OCI layout directory. Not shared between threads; several writers on one
/// directory at once may lose each other's `index.json` entries (blobs are always safe).
#[derive(Debug)]
pub struct LayoutWriter {
    root: PathBuf,
    manifests: Vec<Descriptor>,
}

fn tmp_name(dir: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_name(dir);
    let mut f = create_new(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let r = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

impl LayoutWriter {
    /// Opens (creating if needed) the layout at `root`. An existing `index.json` is loaded.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Json`] or [`Error::InvalidImage`] if the directory holds a
    /// layout this code cannot read.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| Error::io("mkdir", &blobs, e))?;
        let layout = root.join("oci-layout");
        match fs::read(&layout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(&layout, OCI_LAYOUT)?,
            Err(e) => return Err(Error::io("read", layout, e)),
        }
        let index = root.join("index.json");
        let manifests = match fs::read(&index) {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
                        what: index.display().to_string(),
                        source: e,
                    })?;
                let list = v.get("manifests").cloned().unwrap_or_default();
                if list.is_null() {
                    Vec::new()
                } else {
                    serde_json::from_value(list).map_err(|e| Error::Json {
                        what: index.display().to_string(),
                        source: e,
                    })?
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", index, e)),
        };
        Ok(LayoutWriter {
            root: root.to_path_buf(),
            manifests,
        })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of blob `digest`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Whether blob `digest` is present with `size` bytes.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Writes a blob produced by `produce` (which writes the bytes and may return a value);
    /// returns its sha256 digest, size and the value.
    ///
    /// # Errors
    /// [`Error::Io`], or whatever `produce` returns.
    pub fn put_with<T>(
        &mut self,
        produce: impl FnOnce(&mut dyn Write) -> Result<T>,
    ) -> Result<(Digest, u64, T)> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tmp_name(&dir);
        let file = create_new(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
        let produced = produce(&mut w).and_then(|value| {
            w.flush().map_err(|e| Error::io("write", &tmp, e))?;
            w.inner
                .get_ref()
                .sync_all()
                .map_err(|e| Error::io("fsync", &tmp, e))?;
            Ok(value)
        });
        let value = match produced {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let size = w.digester.len();
        let digest = w.digester.finalize();
        let target = self.blob_path(&digest);
        fs::rename(&tmp, &target).map_err(|e| Error::io("rename", &target, e))?;
        Ok((digest, size, value))
    }

    /// Writes `bytes` as a blob (skipped if present); returns its digest.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256(bytes);
        if !self.has_blob(&digest, bytes.len() as u64) {
            write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// Copies the file at `from` as blob `digest` (skipped if present), using the kernel's
    /// copy (reflink or `copy_file_range` where the file system allows).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn put_file(&mut self, digest: &Digest, size: u64, from: &Path) -> Result<()> {
        if self.has_blob(digest, size) {
            return Ok(());
        }
        let dir = self.root.join("blobs").join(digest.algorithm().as_str());
        fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", &dir, e))?;
        let tmp = tmp_name(&dir);
        let r = fs::copy(from, &tmp)
            .and_then(|_| {
                fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            })
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, self.blob_path(digest)));
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("copy", from, e));
        }
        Ok(())
    }

    /// Lists `target` in `index.json` under `name` (a normalised reference, recorded as
    /// `io.containerd.image.name` and its tag as `org.opencontainers.image.ref.name`),
    /// replacing an entry with the same name. Takes effect at [`LayoutWriter::finish`].
    pub fn add_image(&mut self, name: &str, target: &Descriptor) {
        let desc = annotated(name, target);
        let tag = desc.annotations.get(ANNOTATION_REF_NAME).cloned();
        self.manifests.retain(|m| {
            m.annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .map(String::as_str)
                != Some(name)
                && (tag.is_none() || m.annotations.get(ANNOTATION_REF_NAME) != tag.as_ref())
        });
        self.manifests.push(desc);
    }

    /// The `index.json` this writer will write.
    ///
    /// # Errors
    /// [`Error::Json`] (not expected: the values are plain data).
    pub fn index_json(&self) -> Result<Vec<u8>> {
        index_json(&self.manifests)
    }

    /// Writes `index.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn finish(self) -> Result<()> {
        let bytes = self.index_json()?;
        write_atomic(&self.root.join("index.json"), &bytes)?;
        let dir = File::open(&self.root).map_err(|e| Error::io("open", &self.root, e))?;
        dir.sync_all()
            .map_err(|e| Error::io("fsync", &self.root, e))
    }
}

/// `target` with the name annotations of `name` added.
pub(crate) fn annotated(name: &str, target: &Descriptor) -> Descriptor {
    let mut desc = target.clone();
    desc.annotations
        .extend(crate::import::name_annotations(name));
    desc
}

/// An OCI `index.json` listing `manifests`.
pub(crate) fn index_json(manifests: &[Descriptor]) -> Result<Vec<u8>> {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&doc).map_err(|e| Error::Json {
        what: "index.json".into(),
        source: e,
    })
}
