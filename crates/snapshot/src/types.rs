//! Plain data types of the snapshotter contract: [`Kind`], [`Info`], [`Usage`], [`Opts`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// Snapshot labels: an ordered string map (containerd's `map[string]string`).
pub type Labels = BTreeMap<String, String>;

/// Only labels with this prefix are passed down when a snapshot layer hands labels to a
/// backend (containerd's `snapshots.FilterInheritedLabels`); see [`filter_inherited_labels`].
pub const INHERITED_LABEL_PREFIX: &str = "containerd.io/snapshot/";

/// Label set by unpackers to the chainID a snapshot represents.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Label marking an object as a GC root (the value is conventionally an RFC 3339 time).
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";

/// Keeps only the labels a backend may inherit (prefix [`INHERITED_LABEL_PREFIX`]).
pub fn filter_inherited_labels(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(INHERITED_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The kind of a snapshot.
///
/// * `View`: read-only, made by [`crate::Snapshotter::view`]; can never be committed.
/// * `Active`: writable, made by [`crate::Snapshotter::prepare`]; becomes a new `Committed`
///   record through [`crate::Snapshotter::commit`].
/// * `Committed`: immutable; the only kind that may be a parent.
///
/// The serde form is the string `"View"`, `"Active"` or `"Committed"`; parsing is
/// case-insensitive like containerd's `ParseKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only snapshot.
    View,
    /// A writable snapshot.
    Active,
    /// An immutable snapshot that can be a parent.
    Committed,
}

impl Kind {
    /// The canonical string form (`"View"`, `"Active"`, `"Committed"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "View",
            Kind::Active => "Active",
            Kind::Committed => "Committed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;

    /// Parses `view`, `active` or `committed`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "view" => Ok(Kind::View),
            "active" => Ok(Kind::Active),
            "committed" => Ok(Kind::Committed),
            _ => Err(Error::invalid(s, "unknown snapshot kind")),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a snapshotter knows about one snapshot (containerd's `snapshots.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Kind of the snapshot.
    pub kind: Kind,
    /// The key (active/view) or name (committed).
    pub name: String,
    /// The parent's name, `""` when the snapshot starts from an empty directory.
    pub parent: String,
    /// User labels.
    pub labels: Labels,
    /// When the record was created (for a committed snapshot: when it was committed).
    pub created: SystemTime,
    /// When the record was last updated.
    pub updated: SystemTime,
}

/// Resource usage of one snapshot layer, **excluding its parents**.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Number of distinct inodes.
    pub inodes: u64,
    /// Bytes allocated on disk.
    pub size: u64,
}

impl Usage {
    /// Sums two usages (inodes may be double-counted, as in containerd).
    pub fn add(&mut self, other: Usage) {
        self.inodes = self.inodes.saturating_add(other.inodes);
        self.size = self.size.saturating_add(other.size);
    }
}

/// Options for [`crate::Snapshotter::prepare`], [`crate::Snapshotter::view`] and
/// [`crate::Snapshotter::commit`] (containerd's `snapshots.Opt` functions
/// `WithLabels` / `WithParent`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opts {
    /// Labels of the new record. At commit they **replace** the active snapshot's labels.
    pub labels: Labels,
    /// Commit only: rebase the snapshot onto this committed parent. Allowed when the
    /// active snapshot had no parent, or when it names the same parent; any other change
    /// is `InvalidArgument`. Requires [`Capability::Rebase`]. Ignored by prepare/view.
    pub parent: Option<String>,
}

impl Opts {
    /// Empty options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds all `labels`.
    pub fn with_labels(mut self, labels: &Labels) -> Self {
        self.labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// Sets the rebase parent used by commit.
    pub fn with_parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }
}

/// Optional capabilities a snapshotter may advertise ([`crate::Snapshotter::supports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Commit may set the parent of a snapshot prepared without one (containerd `RebaseCap`,
    /// `"rebase"`): layers can then be applied in parallel and committed in order.
    Rebase,
}

impl Capability {
    /// containerd's string for the capability.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Rebase => "rebase",
        }
    }
}

/// How the files of a [`WritableDir`] relate to the snapshot's parents, which decides how a
/// layer applier must express deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirLayout {
    /// The directory holds only this snapshot's own changes; overlayfs stacks it over the
    /// parents. Deletions of parent content must be written in overlay form: a character
    /// device 0/0 for a removed path, the xattr `trusted.overlay.opaque=y` on a directory
    /// that hides its lower contents. (For a snapshot that will stay without parent, plain
    /// removal is equivalent, since nothing is below.)
    OverlayUpper,
    /// The directory is the complete tree (the parents' files were copied in); deletions are
    /// plain removals.
    FullTree,
}

/// The writable directory of an active snapshot, for appliers that write without mounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableDir {
    /// Absolute path of the directory. Treat it as an untrusted root: resolve paths inside it
    /// with `RESOLVE_IN_ROOT`, never follow symlinks found in it.
    pub path: PathBuf,
    /// How deletions must be represented.
    pub layout: DirLayout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_as_string() {
        for k in [Kind::View, Kind::Active, Kind::Committed] {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), k);
        }
        assert_eq!("ACTIVE".parse::<Kind>().unwrap(), Kind::Active);
        assert!("snapshot".parse::<Kind>().is_err());
    }

    #[test]
    fn inherited_labels_keep_prefix_only() {
        let mut l = Labels::new();
        l.insert("containerd.io/snapshot/diff-id".into(), "x".into());
        l.insert("containerd.io/gc.root".into(), "y".into());
        let f = filter_inherited_labels(&l);
        assert_eq!(f.len(), 1);
        assert!(f.contains_key("containerd.io/snapshot/diff-id"));
    }

    #[test]
    fn usage_add_saturates() {
        let mut u = Usage {
            inodes: 1,
            size: u64::MAX,
        };
        u.add(Usage { inodes: 2, size: 5 });
        assert_eq!(
            u,
            Usage {
                inodes: 3,
                size: u64::MAX
            }
        );
    }
}
