//! Unit tests of the metadata rules.

use super::*;
use crate::ErrorKind;
use crate::types::Opts;

fn store() -> (tempfile::TempDir, MetaStore) {
    let tmp = tempfile::tempdir().unwrap();
    let m = MetaStore::open(tmp.path()).unwrap();
    (tmp, m)
}

fn write<T>(m: &MetaStore, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
    let s = m.session()?;
    let tx = s.begin_write()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn labels(k: &str, v: &str) -> Labels {
    [(k.to_string(), v.to_string())].into_iter().collect()
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn committed(m: &MetaStore, name: &str, parent: &str) -> u64 {
    let key = format!("{name}-active");
    write(m, |tx| {
        tx.create(Kind::Active, &key, parent, &Labels::new(), now())
    })
    .unwrap();
    write(m, |tx| {
        tx.commit_active(&key, name, Usage::default(), &Opts::new(), now())
    })
    .unwrap()
}

#[test]
fn create_enforces_kind_parent_and_uniqueness() {
    let (_t, m) = store();
    let e = write(&m, |tx| {
        tx.create(Kind::Committed, "x", "", &Labels::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let e = write(&m, |tx| {
        tx.create(Kind::Active, "", "", &Labels::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    let e = write(&m, |tx| {
        tx.create(Kind::Active, "x", "nope", &Labels::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
    write(&m, |tx| {
        tx.create(Kind::Active, "a", "", &Labels::new(), now())
    })
    .unwrap();
    let e = write(&m, |tx| {
        tx.create(Kind::View, "a", "", &Labels::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let e = write(&m, |tx| {
        tx.create(Kind::Active, "b", "a", &Labels::new(), now())
    });
    assert_eq!(
        e.unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "parent not committed"
    );
    let big = labels("k", &"v".repeat(MAX_LABEL_SIZE));
    let e = write(&m, |tx| tx.create(Kind::Active, "c", "", &big, now()));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    // Nothing of the failed attempts was recorded.
    assert_eq!(m.session().unwrap().all().unwrap().len(), 1);
}

#[test]
fn commit_keeps_id_replaces_labels_and_moves_the_parent_link() {
    let (_t, m) = store();
    let base = committed(&m, "base", "");
    let snap = write(&m, |tx| {
        tx.create(Kind::Active, "child", "base", &labels("old", "1"), now())
    })
    .unwrap();
    assert_eq!(snap.parent_ids, vec![base]);
    let id = write(&m, |tx| {
        tx.commit_active(
            "child",
            "child-c",
            Usage {
                inodes: 3,
                size: 4096,
            },
            &Opts::new().with_label("new", "2"),
            now(),
        )
    })
    .unwrap();
    assert_eq!(id, snap.id, "commit keeps the numeric id");
    let s = m.session().unwrap();
    let rec = s.record("child-c").unwrap();
    assert_eq!(rec.kind, Kind::Committed);
    assert_eq!(rec.labels, labels("new", "2"));
    assert_eq!(
        rec.usage,
        Some(Usage {
            inodes: 3,
            size: 4096
        })
    );
    assert_eq!(s.info("child").unwrap_err().kind(), ErrorKind::NotFound);
    drop(s);
    // The back-index now names the committed child: the parent is still pinned.
    let e = write(&m, |tx| tx.remove("base"));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::FailedPrecondition);
    write(&m, |tx| tx.remove("child-c")).unwrap();
    write(&m, |tx| tx.remove("base")).unwrap();
    assert!(m.session().unwrap().all().unwrap().is_empty());
}

#[test]
fn commit_errors_and_rebase_rules() {
    let (_t, m) = store();
    committed(&m, "base", "");
    committed(&m, "other", "");
    write(&m, |tx| {
        tx.create(Kind::View, "v", "base", &Labels::new(), now())
    })
    .unwrap();
    let e = write(&m, |tx| {
        tx.commit_active("v", "v-c", Usage::default(), &Opts::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::FailedPrecondition);
    let e = write(&m, |tx| {
        tx.commit_active("missing", "m-c", Usage::default(), &Opts::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
    write(&m, |tx| {
        tx.create(Kind::Active, "a", "base", &Labels::new(), now())
    })
    .unwrap();
    let e = write(&m, |tx| {
        tx.commit_active("a", "base", Usage::default(), &Opts::new(), now())
    });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let e = write(&m, |tx| {
        tx.commit_active(
            "a",
            "a-c",
            Usage::default(),
            &Opts::new().with_parent("other"),
            now(),
        )
    });
    assert_eq!(
        e.unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "base -> other"
    );
    write(&m, |tx| {
        tx.commit_active(
            "a",
            "a-c",
            Usage::default(),
            &Opts::new().with_parent(""),
            now(),
        )
    })
    .unwrap();
    assert_eq!(m.session().unwrap().info("a-c").unwrap().parent, "base");
    // Rebase of a parentless snapshot onto a committed parent.
    write(&m, |tx| {
        tx.create(Kind::Active, "np", "", &Labels::new(), now())
    })
    .unwrap();
    write(&m, |tx| {
        tx.commit_active(
            "np",
            "np-c",
            Usage::default(),
            &Opts::new().with_parent("a-c"),
            now(),
        )
    })
    .unwrap();
    let s = m.session().unwrap();
    let snap = s.snapshot("np-c").unwrap();
    let a = s.record("a-c").unwrap().id;
    let b = s.record("base").unwrap().id;
    assert_eq!(snap.parent_ids, vec![a, b], "nearest parent first");
    drop(s);
    let e = write(&m, |tx| tx.remove("a-c"));
    assert_eq!(
        e.unwrap_err().kind(),
        ErrorKind::FailedPrecondition,
        "rebase linked"
    );
}

#[test]
fn update_changes_labels_only() {
    let (_t, m) = store();
    write(&m, |tx| {
        tx.create(Kind::Active, "a", "", &labels("l1", "v1"), now())
    })
    .unwrap();
    let mut info = m.session().unwrap().info("a").unwrap();
    info.labels.insert("l2".into(), "v2".into());
    info.labels.remove("l1");
    let out = write(&m, |tx| {
        tx.update(&info, &["labels.l2", "labels.l1"], now())
    })
    .unwrap();
    assert_eq!(out.labels, labels("l2", "v2"));
    let e = write(&m, |tx| tx.update(&info, &["kind"], now()));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    info.name = "nope".into();
    let e = write(&m, |tx| tx.update(&info, &[], now()));
    assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn ids_are_never_reused_after_commit() {
    let (_t, m) = store();
    let a = committed(&m, "a", "");
    write(&m, |tx| tx.remove("a")).unwrap();
    let b = committed(&m, "b", "");
    assert!(b > a, "{b} <= {a}");
}

#[test]
fn corrupt_record_is_internal() {
    let (t, m) = store();
    {
        let mut b = redb::Database::builder();
        b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let db = b.create(t.path().join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(SNAPSHOTS)
            .unwrap()
            .insert("bad", b"{not json".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let e = m.session().unwrap().info("bad").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[test]
fn reopening_keeps_the_schema_and_refuses_a_newer_one() {
    let (tmp, m) = store();
    committed(&m, "kept", "");
    m.close();
    drop(m);
    // Reopened (the read-only schema check path): the data is there.
    let m = MetaStore::open(tmp.path()).unwrap();
    assert!(m.session().is_ok());
    write(&m, |tx| {
        tx.create(Kind::Active, "again", "kept", &Labels::new(), now())
    })
    .unwrap();
    // A file written by a newer build is refused, not written to.
    {
        let s = m.session().unwrap();
        let tx = s.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    m.close();
    drop(m);
    let Err(err) = MetaStore::open(tmp.path()) else {
        panic!("a newer schema must be refused");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}
