//! Shared helpers of the apply/diff integration tests: raw tar building, sandboxes with a "host"
//! area outside the root, and tree snapshots for comparisons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_image::apply::{ApplyOptions, ApplyStats, Error, apply_layer};

/// Builds tars with raw names, so `..`, empty and absolute names can be written as attackers
/// would (the `tar` crate's `set_path` refuses them).
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
            mtime: 1_700_000_000,
        }
    }

    pub fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(u64::from(rustix::process::getuid().as_raw()));
        h.set_gid(u64::from(rustix::process::getgid().as_raw()));
        let gnu = h.as_gnu_mut().unwrap();
        assert!(name.len() < 100, "test names must fit the v7 field");
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h
    }

    fn set_link(h: &mut tar::Header, target: &str) {
        let gnu = h.as_gnu_mut().unwrap();
        assert!(target.len() < 100);
        gnu.linkname = [0; 100];
        gnu.linkname[..target.len()].copy_from_slice(target.as_bytes());
    }

    pub fn raw(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, name, mode, 0);
        h.set_mtime(self.mtime);
        self.raw(h, &[])
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, name, mode, data.len() as u64);
        h.set_mtime(self.mtime);
        self.raw(h, data)
    }

    pub fn symlink(&mut self, target: &str, name: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, name, 0o777, 0);
        Self::set_link(&mut h, target);
        h.set_mtime(self.mtime);
        self.raw(h, &[])
    }

    pub fn link(&mut self, target: &str, name: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, name, 0o644, 0);
        Self::set_link(&mut h, target);
        h.set_mtime(self.mtime);
        self.raw(h, &[])
    }

    /// An entry preceded by a PAX header with the given records.
    pub fn with_pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// A test area: `base/host` plays the host filesystem, `base/d1/…/d9/root` is the apply root,
/// deeper than any `..` chain the tests use, so a broken resolver could only reach `base`.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub host: PathBuf,
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        Self::with_depth(9)
    }

    /// A sandbox whose root sits `depth` directories below it.
    pub fn with_depth(depth: usize) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("berth-apply-test-")
            .tempdir()
            .unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::write(host.join("etc/passwd"), b"host passwd").unwrap();
        std::fs::write(host.join("etc/unbroken"), b"host unbroken").unwrap();
        std::fs::write(host.join("etc/whitedout"), b"host whitedout").unwrap();
        let mut root = tmp.path().to_path_buf();
        for i in 1..=depth {
            root.push(format!("d{i}"));
        }
        root.push("root");
        std::fs::create_dir_all(&root).unwrap();
        Sandbox { tmp, host, root }
    }

    /// The host `etc` as an absolute path string: what the tests use where containerd's use
    /// `/etc`, so that a broken resolver would hit this directory, never the real `/etc`.
    pub fn etc(&self) -> String {
        format!("{}/etc", self.host.display())
    }

    /// The in-root location of an absolute host path.
    pub fn in_root(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Everything under the sandbox outside the root.
    pub fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for e in walkdir::WalkDir::new(self.tmp.path()).follow_links(false) {
            let e = e.unwrap();
            if e.path().starts_with(&self.root) {
                continue;
            }
            out.insert(e.path().to_path_buf(), describe(e.path()));
        }
        out
    }

    pub fn apply(&self, tar: &[u8], userspace: bool) -> Result<ApplyStats, Error> {
        apply_layer(
            &self.root,
            tar,
            ApplyOptions::default().with_userspace_resolver(userspace),
        )
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A one-line description of a path (type, mode, owner, inode, size, content or target).
pub fn describe(p: &Path) -> String {
    let m = std::fs::symlink_metadata(p).unwrap();
    let ft = m.file_type();
    let what = if ft.is_symlink() {
        format!("link->{}", std::fs::read_link(p).unwrap().display())
    } else if ft.is_file() {
        format!(
            "file:{:?}",
            String::from_utf8_lossy(&std::fs::read(p).unwrap())
        )
    } else if ft.is_dir() {
        "dir".to_owned()
    } else {
        "special".to_owned()
    };
    format!(
        "{what} mode={:o} uid={} gid={} ino={} nlink={}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.ino(),
        m.nlink()
    )
}

/// Metadata of one node for tree comparisons (no inode numbers: hardlinks are compared as
/// groups separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Option<[u8; 32]>,
    pub size: u64,
    pub target: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: Option<i64>,
}

/// A tree snapshot: path relative to the root → node, plus hardlink groups (sets of paths with
/// one inode, only those with more than one member).
#[derive(Debug, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<PathBuf, Node>,
    pub links: Vec<Vec<PathBuf>>,
}

/// Snapshots `root`. `with_mtimes` records non-directory mtimes too.
pub fn snapshot(root: &Path, with_mtimes: bool) -> Tree {
    use sha2_lite::sha256;
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let content = ft
            .is_file()
            .then(|| sha256(&std::fs::read(e.path()).unwrap()));
        let target = ft
            .is_symlink()
            .then(|| std::fs::read_link(e.path()).unwrap());
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(e.path()) {
            for n in names {
                let n = n.to_string_lossy().into_owned();
                if let Ok(Some(v)) = xattr::get(e.path(), &n) {
                    xattrs.insert(n, v);
                }
            }
        }
        if !ft.is_dir() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        nodes.insert(
            rel,
            Node {
                kind: kind.to_owned(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                content,
                size: if ft.is_file() { m.len() } else { 0 },
                target,
                rdev: m.rdev(),
                xattrs,
                mtime: (with_mtimes && !ft.is_dir()).then(|| m.mtime()),
            },
        );
    }
    let mut links: Vec<Vec<PathBuf>> = inodes.into_values().filter(|v| v.len() > 1).collect();
    links.sort();
    Tree { nodes, links }
}

/// Lists every difference between two trees (empty when equal).
pub fn tree_diff(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in &a.nodes {
        match b.nodes.get(p) {
            None => out.push(format!("only in first: {}", p.display())),
            Some(m) if m != n => out.push(format!("{}: {n:?} != {m:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in b.nodes.keys() {
        if !a.nodes.contains_key(p) {
            out.push(format!("only in second: {}", p.display()));
        }
    }
    if a.links != b.links {
        out.push(format!(
            "hardlink groups differ: {:?} != {:?}",
            a.links, b.links
        ));
    }
    out
}

/// Whether tests must not skip (CI).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1")
}

/// Skips (prints why) outside CI, fails in CI.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("required for this test under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Whether we run as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tiny SHA-256 via the oci crate's digest (keeps the helpers dependency-free).
mod sha2_lite {
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        let d = berth_oci::Digest::sha256(data);
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&d.hex()[i * 2..i * 2 + 2], 16).unwrap();
        }
        out
    }
}
