//! Error classification and smaller contract points on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(test)]
mod tests {
    use std::fs;

    use berth_snapshot::testsuite::{self, Harness};
    use berth_snapshot::{
        Capability, DirLayout, ErrorKind, Mount, NativeSnapshotter, Opts, OverlaySnapshotter, Usage,
    };

    fn for_each_backend(f: impl Fn(&str, &Harness)) {
        let mut backends: Vec<(&str, &testsuite::Factory)> =
            vec![("native", &crate::common::native_factory)];
        if crate::common::privileged("overlay") {
            backends.push(("overlay", &crate::common::overlay_factory));
        } else if !crate::common::privileged("native") {
            return;
        }
        for (name, factory) in backends {
            let h = Harness::new(factory).unwrap();
            f(name, &h);
        }
    }

    #[test]
    fn wrong_kind_operations_are_classified() {
        for_each_backend(|b, h| {
            let sn = &h.sn;
            let o = Opts::new();
            sn.prepare("a", "", &o).unwrap();
            sn.commit("c", "a", &o).unwrap();
            sn.view("v", "c", &o).unwrap();
            sn.prepare("act", "c", &o).unwrap();
            let k = |r: berth_snapshot::Result<()>| r.unwrap_err().kind();
            assert_eq!(
                k(sn.mounts("c").map(drop)),
                ErrorKind::FailedPrecondition,
                "{b}"
            );
            assert_eq!(
                k(sn.commit("v-c", "v", &o)),
                ErrorKind::FailedPrecondition,
                "{b}"
            );
            assert_eq!(k(sn.commit("c2", "nope", &o)), ErrorKind::NotFound, "{b}");
            assert_eq!(
                k(sn.commit("c", "act", &o)),
                ErrorKind::AlreadyExists,
                "{b}"
            );
            assert_eq!(
                k(sn.prepare("x", "v", &o).map(drop)),
                ErrorKind::InvalidArgument,
                "{b}"
            );
            assert_eq!(
                k(sn.prepare("x", "act", &o).map(drop)),
                ErrorKind::InvalidArgument
            );
            assert_eq!(
                k(sn.prepare("x", "nope", &o).map(drop)),
                ErrorKind::NotFound,
                "{b}"
            );
            assert_eq!(
                k(sn.prepare("", "", &o).map(drop)),
                ErrorKind::InvalidArgument,
                "{b}"
            );
            assert_eq!(k(sn.remove("nope")), ErrorKind::NotFound, "{b}");
            assert_eq!(k(sn.stat("nope").map(drop)), ErrorKind::NotFound, "{b}");
            assert_eq!(
                k(sn.walk(&["name~=x"], &mut |_| Ok(()))),
                ErrorKind::InvalidArgument,
                "{b}"
            );
            assert_eq!(
                k(sn.writable_dir("v").map(drop)),
                ErrorKind::FailedPrecondition
            );
            assert_eq!(sn.usage("v").unwrap(), Usage::default(), "{b}: view usage");
            // The mounts of a view and an active are recoverable and equal prepare's.
            assert_eq!(sn.mounts("act").unwrap().len(), 1, "{b}");
        });
    }

    #[test]
    fn walk_stops_at_the_first_callback_error() {
        for_each_backend(|b, h| {
            for i in 0..3 {
                h.sn.prepare(&format!("k{i}"), "", &Opts::new()).unwrap();
            }
            let mut calls = 0;
            let err =
                h.sn.walk(&[], &mut |i| {
                    calls += 1;
                    Err(berth_snapshot::Error::NotFound {
                        key: i.name.clone(),
                    })
                })
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{b}");
            assert_eq!(calls, 1, "{b}");
        });
    }

    #[test]
    fn labels_round_trip_and_commit_replaces_them() {
        for_each_backend(|b, h| {
            let o = Opts::new()
                .with_label("containerd.io/snapshot/diff-id", "sha256:x")
                .with_label("other", "1");
            h.sn.prepare("a", "", &o).unwrap();
            assert_eq!(h.sn.stat("a").unwrap().labels, o.labels, "{b}");
            h.sn.commit("c", "a", &Opts::new().with_label("kept", "yes"))
                .unwrap();
            let l = h.sn.stat("c").unwrap().labels;
            assert_eq!(l.len(), 1, "{b}: {l:?}");
            let inherited = berth_snapshot::filter_inherited_labels(&o.labels);
            assert_eq!(inherited.len(), 1);
        });
    }

    #[test]
    fn native_has_no_rebase_and_exposes_the_full_tree() {
        if !crate::common::privileged("native") {
            return;
        }
        let h = Harness::new(&crate::common::native_factory).unwrap();
        assert!(!h.sn.supports(Capability::Rebase));
        testsuite::create_snapshot(
            &h,
            "base",
            "",
            &[testsuite::fstest::create_file("/f", b"1", 0o644)],
        )
        .unwrap();
        h.sn.prepare("np", "", &Opts::new()).unwrap();
        let e =
            h.sn.commit("np-c", "np", &Opts::new().with_parent("base"))
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let mounts = h.sn.prepare("child", "base", &Opts::new()).unwrap();
        let wd = h.sn.writable_dir("child").unwrap().unwrap();
        assert_eq!(wd.layout, DirLayout::FullTree);
        assert_eq!(mounts[0].source, wd.path.to_string_lossy());
        assert_eq!(
            fs::read(wd.path.join("f")).unwrap(),
            b"1",
            "parent copied in"
        );
    }

    #[test]
    fn overlay_root_with_separator_characters_is_refused() {
        if !crate::common::privileged("overlay") {
            return;
        }
        let dir = std::env::temp_dir().join(testsuite::unique("berth-snapshot-a:b"));
        let r = OverlaySnapshotter::new(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
        let dir = std::env::temp_dir().join(testsuite::unique("berth-snapshot-ok"));
        let r = NativeSnapshotter::new(&dir);
        let _ = fs::remove_dir_all(&dir);
        r.unwrap();
    }

    #[test]
    fn mount_target_subpath_stacks_under_the_root() {
        if !crate::common::privileged("native") {
            return;
        }
        let h = Harness::new(&crate::common::native_factory).unwrap();
        let src = h.work_dir("src").unwrap();
        fs::write(src.join("inner"), b"i").unwrap();
        let root = h.work_dir("root").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        let mut m = Mount::bind(src.to_string_lossy(), true);
        m.target = Some("/sub".into());
        let g = berth_snapshot::mount_all(&[m], &root).unwrap();
        assert_eq!(fs::read(root.join("sub/inner")).unwrap(), b"i");
        assert_eq!(g.targets(), [root.join("sub")]);
        g.unmount().unwrap();
        assert!(!root.join("sub/inner").exists());
    }

    #[test]
    fn kind_and_info_serialize_as_containerd_strings() {
        let info = berth_snapshot::Info {
            kind: berth_snapshot::Kind::Committed,
            name: "n".into(),
            parent: String::new(),
            labels: Default::default(),
            created: std::time::SystemTime::UNIX_EPOCH,
            updated: std::time::SystemTime::UNIX_EPOCH,
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["kind"], "Committed");
        let back: berth_snapshot::Info = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
        let m = Mount::bind("/x", false);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "bind");
    }

    #[test]
    fn overlay_usage_counts_only_the_layer() {
        if !crate::common::privileged("overlay") {
            return;
        }
        let h = Harness::new(&crate::common::overlay_factory).unwrap();
        let big = vec![0x5au8; 1 << 20];
        testsuite::create_snapshot(
            &h,
            "base",
            "",
            &[testsuite::fstest::create_file("/big", &big, 0o644)],
        )
        .unwrap();
        testsuite::create_snapshot(
            &h,
            "child",
            "base",
            &[testsuite::fstest::create_file("/small", b"s", 0o644)],
        )
        .unwrap();
        let base = h.sn.usage("base").unwrap();
        let child = h.sn.usage("child").unwrap();
        assert!(base.size >= 1 << 20, "{base:?}");
        assert!(
            child.size < 1 << 16,
            "child usage includes the parent: {child:?}"
        );
        assert_eq!(child.inodes, 2, "root + /small: {child:?}");
        let mut total = base;
        total.add(child);
        assert_eq!(total.inodes, base.inodes + 2);
    }
}
