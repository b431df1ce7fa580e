//! The write-transaction side of the metadata store: the containerd `MetaStore` rules.

use std::time::SystemTime;

use redb::ReadableTable;

use super::{
    META, PARENTS, Record, SCHEMA_VERSION, SNAPSHOTS, Snapshot, WriteTx, corrupt, db_err,
    snapshot_of, try_record, validate_key, validate_labels,
};
use crate::error::{Error, Result};
use crate::types::{Info, Kind, Labels, Opts, Usage};

impl WriteTx {
    fn err(&self, op: &'static str) -> impl Fn(redb::TableError) -> Error + '_ {
        move |e| db_err(&self.path, op, e)
    }

    fn serr(&self, op: &'static str) -> impl Fn(redb::StorageError) -> Error + '_ {
        move |e| db_err(&self.path, op, e)
    }

    /// Creates the tables and checks/records the schema version.
    pub(super) fn init_schema(&self) -> Result<()> {
        let mut meta = self.tx.open_table(META).map_err(self.err("open meta"))?;
        let version = meta
            .get("schema_version")
            .map_err(self.serr("read version"))?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(self.serr("write version"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Error::Unavailable {
                    reason: format!(
                        "{}: schema version {other}, this build understands {SCHEMA_VERSION}",
                        self.path.display()
                    ),
                });
            }
        }
        drop(meta);
        self.tx
            .open_table(SNAPSHOTS)
            .map_err(self.err("open snapshots"))?;
        self.tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        Ok(())
    }

    /// Commits the transaction.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(|e| db_err(&path, "commit", e))
    }

    fn put(&self, key: &str, rec: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| corrupt(&self.path, key, e.to_string()))?;
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        t.insert(key, bytes.as_slice())
            .map_err(self.serr("insert"))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        let t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        try_record(&t, &self.path, key)
    }

    /// The snapshot of `key` as seen inside this transaction.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        snapshot_of(&t, &self.path, key)
    }

    fn next_id(&self) -> Result<u64> {
        let mut meta = self.tx.open_table(META).map_err(self.err("open meta"))?;
        let id = meta
            .get("next_id")
            .map_err(self.serr("read next_id"))?
            .map_or(1, |v| v.value());
        let next = id
            .checked_add(1)
            .ok_or_else(|| corrupt(&self.path, "next_id", "id sequence exhausted"))?;
        meta.insert("next_id", next)
            .map_err(self.serr("write next_id"))?;
        Ok(id)
    }

    fn has_children(&self, id: u64) -> Result<bool> {
        let t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        let mut r = t
            .range((id, 0)..=(id, u64::MAX))
            .map_err(self.serr("range parents"))?;
        Ok(r.next().is_some())
    }

    fn link(&self, parent_id: u64, child_id: u64, child: &str) -> Result<()> {
        let mut t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        t.insert((parent_id, child_id), child)
            .map_err(self.serr("insert parent link"))?;
        Ok(())
    }

    fn unlink(&self, parent_id: u64, child_id: u64) -> Result<()> {
        let mut t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        t.remove((parent_id, child_id))
            .map_err(self.serr("remove parent link"))?;
        Ok(())
    }

    /// Creates an Active or View record. Returns its snapshot (fresh id, parent chain).
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: &Labels,
        now: SystemTime,
    ) -> Result<Snapshot> {
        validate_key(key)?;
        validate_labels(key, labels)?;
        if kind == Kind::Committed {
            return Err(Error::invalid(
                key,
                format!("cannot create a {kind} snapshot"),
            ));
        }
        if self.get(key)?.is_some() {
            return Err(Error::exists(key));
        }
        let mut parent_id = None;
        if !parent.is_empty() {
            let p = self.get(parent)?.ok_or_else(|| Error::not_found(parent))?;
            if p.kind != Kind::Committed {
                return Err(Error::invalid(
                    parent,
                    format!("parent of {key:?} is not a committed snapshot"),
                ));
            }
            parent_id = Some(p.id);
        }
        let id = self.next_id()?;
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels: labels.clone(),
            created: now,
            updated: now,
            usage: None,
        };
        self.put(key, &rec)?;
        if let Some(pid) = parent_id {
            self.link(pid, id, key)?;
        }
        self.snapshot(key)
    }

    /// Turns active `key` into committed `name` (same id). Returns the id.
    pub fn commit_active(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        opts: &Opts,
        now: SystemTime,
    ) -> Result<u64> {
        validate_key(name)?;
        validate_labels(name, &opts.labels)?;
        if self.get(name)?.is_some() {
            return Err(Error::exists(name));
        }
        let mut rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if rec.kind != Kind::Active {
            return Err(Error::precondition(
                key,
                format!(
                    "snapshot is {}, only an active snapshot can be committed",
                    rec.kind
                ),
            ));
        }
        let rebase = opts.parent.as_deref().unwrap_or("");
        if rec.parent != rebase && !rebase.is_empty() {
            if !rec.parent.is_empty() {
                return Err(Error::invalid(
                    key,
                    format!(
                        "cannot change parent {:?} to {rebase:?} on commit",
                        rec.parent
                    ),
                ));
            }
            rec.parent = rebase.to_string();
        }
        rec.kind = Kind::Committed;
        rec.created = now;
        rec.updated = now;
        rec.labels = opts.labels.clone();
        rec.usage = Some(usage);
        {
            let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
            t.remove(key).map_err(self.serr("remove"))?;
        }
        if !rec.parent.is_empty() {
            let p = self
                .get(&rec.parent)?
                .ok_or_else(|| Error::not_found(rec.parent.clone()))?;
            if p.kind != Kind::Committed {
                return Err(Error::precondition(
                    rec.parent.clone(),
                    format!("parent of {name:?} is not committed"),
                ));
            }
            self.link(p.id, rec.id, name)?;
        }
        self.put(name, &rec)?;
        Ok(rec.id)
    }

    /// Removes `key`; FailedPrecondition while it has children. Returns (id, kind).
    pub fn remove(&self, key: &str) -> Result<(u64, Kind)> {
        let rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if self.has_children(rec.id)? {
            return Err(Error::precondition(
                key,
                "cannot remove snapshot with child",
            ));
        }
        if !rec.parent.is_empty() {
            let p = self
                .get(&rec.parent)?
                .ok_or_else(|| corrupt(&self.path, key, "missing parent"))?;
            self.unlink(p.id, rec.id)?;
        }
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        t.remove(key).map_err(self.serr("remove"))?;
        Ok((rec.id, rec.kind))
    }

    /// Applies a label update (containerd `UpdateInfo`). Returns the new info.
    pub fn update(&self, info: &Info, fieldpaths: &[&str], now: SystemTime) -> Result<Info> {
        let key = info.name.as_str();
        let mut rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if fieldpaths.is_empty() {
            rec.labels = info.labels.clone();
        } else {
            for path in fieldpaths {
                if let Some(label) = path.strip_prefix("labels.") {
                    match info.labels.get(label) {
                        Some(v) => {
                            rec.labels.insert(label.to_string(), v.clone());
                        }
                        None => {
                            rec.labels.remove(label);
                        }
                    }
                } else if *path == "labels" {
                    rec.labels = info.labels.clone();
                } else {
                    return Err(Error::invalid(
                        key,
                        format!("cannot update field {path:?}: only labels are mutable"),
                    ));
                }
            }
        }
        validate_labels(key, &rec.labels)?;
        rec.updated = now;
        self.put(key, &rec)?;
        Ok(rec.info(key))
    }

    /// The set of ids in use, as seen by this transaction (for the orphan sweep).
    pub fn ids(&self) -> Result<std::collections::HashSet<u64>> {
        let t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        let mut out = std::collections::HashSet::new();
        for item in t.iter().map_err(self.serr("iterate"))? {
            let (k, v) = item.map_err(self.serr("iterate"))?;
            out.insert(super::decode(&self.path, k.value(), v.value())?.id);
        }
        Ok(out)
    }
}
