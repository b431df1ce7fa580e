//! Crash safety of the directory protocol: stray `new-*` and orphaned directories are
//! swept, a failed create leaves neither a record nor a directory, an unowned directory
//! with the next id is replaced rather than adopted, and metadata survives a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::{Path, PathBuf};

    use berth_snapshot::{
        ErrorKind, Mount, NativeSnapshotter, Opts, OverlaySnapshotter, Snapshotter, testsuite,
    };

    /// A temp root removed on drop (after unmounting anything left below it).
    struct Root(PathBuf);

    impl Root {
        fn new() -> Self {
            let p = std::env::temp_dir().join(testsuite::unique("berth-snapshot-crash"));
            fs::create_dir_all(&p).unwrap();
            Root(p)
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            for m in testsuite::mounts_under(&self.0) {
                let _ = berth_snapshot::unmount_all(&m);
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entries(root: &Path) -> BTreeSet<String> {
        fs::read_dir(root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn record_count(sn: &dyn Snapshotter) -> usize {
        let mut n = 0;
        sn.walk(&[], &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        n
    }

    fn backends(root: &Path) -> Vec<Box<dyn Snapshotter>> {
        let mut v: Vec<Box<dyn Snapshotter>> = Vec::new();
        v.push(Box::new(
            NativeSnapshotter::new(root.join("native")).unwrap(),
        ));
        if berth_snapshot::overlay::overlay_supported() {
            v.push(Box::new(
                OverlaySnapshotter::new(root.join("overlay")).unwrap(),
            ));
        }
        v
    }

    #[test]
    fn cleanup_sweeps_stray_and_orphaned_directories() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        for (sn, dir) in backends(&r.0).iter().zip(["native", "overlay"]) {
            let root = r.0.join(dir);
            sn.prepare("a", "", &Opts::new()).unwrap();
            sn.commit("a-c", "a", &Opts::new()).unwrap();
            sn.prepare("b", "a-c", &Opts::new()).unwrap();
            let live = entries(&root);
            assert_eq!(live.len(), 2, "{live:?}");
            // A crash while building a directory, and one after a removal's commit.
            fs::create_dir_all(root.join("snapshots/new-deadbeef/fs/x")).unwrap();
            fs::create_dir_all(root.join("snapshots/999/fs/y")).unwrap();
            fs::create_dir_all(root.join("snapshots/rm-0123/fs")).unwrap();
            sn.cleanup().unwrap();
            assert_eq!(
                entries(&root),
                live,
                "{dir}: cleanup kept or removed the wrong dirs"
            );
            assert_eq!(record_count(sn.as_ref()), 2);
            // Records still resolve to directories.
            assert!(sn.writable_dir("b").unwrap().unwrap().path.is_dir());
        }
    }

    #[test]
    fn unowned_directory_with_next_id_is_replaced_not_adopted() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        for (sn, dir) in backends(&r.0).iter().zip(["native", "overlay"]) {
            let root = r.0.join(dir);
            sn.prepare("one", "", &Opts::new()).unwrap(); // id 1
            // A create that renamed snapshots/2 into place but crashed before its commit.
            fs::create_dir_all(root.join("snapshots/2/fs")).unwrap();
            fs::write(root.join("snapshots/2/fs/stale"), b"x").unwrap();
            sn.prepare("two", "", &Opts::new()).unwrap();
            let wd = sn.writable_dir("two").unwrap().unwrap();
            assert!(wd.path.ends_with("snapshots/2/fs"), "{dir}: {wd:?}");
            assert!(
                !wd.path.join("stale").exists(),
                "{dir}: adopted a stale directory"
            );
            sn.cleanup().unwrap();
            assert!(entries(&root).iter().all(|e| !e.starts_with("rm-")));
        }
    }

    #[test]
    fn failed_create_leaves_no_record_and_no_directory() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        for (sn, dir) in backends(&r.0).iter().zip(["native", "overlay"]) {
            let root = r.0.join(dir);
            sn.prepare("keep", "", &Opts::new()).unwrap();
            let before = entries(&root);
            // Make the snapshots directory read-only so building the new directory fails.
            let snaps = root.join("snapshots");
            let ro = Mount::bind(snaps.to_string_lossy(), true)
                .mount(&snaps)
                .unwrap();
            let err = sn.prepare("doomed", "", &Opts::new()).unwrap_err();
            ro.unmount().unwrap();
            assert_eq!(err.kind(), ErrorKind::Io, "{dir}: {err}");
            let st = sn.stat("doomed").unwrap_err();
            assert_eq!(st.kind(), ErrorKind::NotFound, "{dir}: record left behind");
            assert_eq!(entries(&root), before, "{dir}: directory left behind");
            // The id is free again and the store still works.
            sn.prepare("after", "", &Opts::new()).unwrap();
            assert_eq!(record_count(sn.as_ref()), 2);
        }
    }

    #[test]
    fn metadata_survives_reopen_and_checks_schema_version() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        let root = r.0.join("native");
        {
            let sn = NativeSnapshotter::new(&root).unwrap();
            sn.prepare("p", "", &Opts::new().with_label("k", "v"))
                .unwrap();
            sn.commit("c", "p", &Opts::new().with_label("k", "v"))
                .unwrap();
            sn.close().unwrap();
            assert_eq!(
                sn.stat("c").unwrap_err().kind(),
                ErrorKind::FailedPrecondition,
                "use after close"
            );
        }
        let sn = NativeSnapshotter::new(&root).unwrap();
        let info = sn.stat("c").unwrap();
        assert_eq!(info.labels.get("k").map(String::as_str), Some("v"));
        drop(sn);
        {
            let db = redb::Database::create(root.join("metadata.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx
                    .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                    .unwrap();
                t.insert("schema_version", 99).unwrap();
            }
            tx.commit().unwrap();
        }
        let err = NativeSnapshotter::new(&root).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("99"), "{err}");
    }

    #[test]
    fn removal_moves_directory_out_and_usage_is_cached() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        for (sn, dir) in backends(&r.0).iter().zip(["native", "overlay"]) {
            let root = r.0.join(dir);
            sn.prepare("p", "", &Opts::new()).unwrap();
            let wd = sn.writable_dir("p").unwrap().unwrap();
            fs::write(wd.path.join("data"), vec![7u8; 64 * 1024]).unwrap();
            let live = sn.usage("p").unwrap();
            assert!(live.size >= 64 * 1024, "{dir}: {live:?}");
            sn.commit("c", "p", &Opts::new()).unwrap();
            let cached = sn.usage("c").unwrap();
            assert_eq!(cached, live, "{dir}: usage at commit");
            sn.remove("c").unwrap();
            assert!(entries(&root).is_empty(), "{dir}: {:?}", entries(&root));
        }
    }

    #[test]
    fn cleanup_leaves_a_directory_being_built_alone() {
        if !crate::common::privileged("native") {
            return;
        }
        let r = Root::new();
        let root = r.0.join("native");
        let sn = NativeSnapshotter::new(&root).unwrap();
        let building = root.join("snapshots/new-inprogress");
        fs::create_dir_all(building.join("fs")).unwrap();
        let fd = fs::File::open(&building).unwrap();
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive).unwrap();
        sn.cleanup().unwrap();
        assert!(building.exists(), "swept a directory that is being built");
        drop(fd);
        sn.cleanup().unwrap();
        assert!(!building.exists(), "an abandoned build was not swept");
    }
}
