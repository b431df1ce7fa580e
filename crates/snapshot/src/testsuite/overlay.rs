//! Overlay-specific tests (containerd's `plugins/snapshots/overlay/overlay_test.go`), run
//! after the generic suite: exact mount shapes and option order, rebase at commit, real
//! overlay reads, views, and the `index` option handling.

use std::path::{Path, PathBuf};

use super::{CaseResult, Context, Failure, Harness, create_snapshot, ensure, gc_opts};
use crate::overlay::{INDEX_PARAMETER, OverlayOptions, OverlaySnapshotter};
use crate::{Capability, DirLayout, ErrorKind, Mount, Opts, Snapshotter};

/// Opens an overlay snapshotter on a root with options.
pub type OverlayFactory =
    dyn Fn(&Path, OverlayOptions) -> crate::Result<OverlaySnapshotter> + Send + Sync;

/// An overlay-specific case.
pub type OverlayCase = fn(&OverlayFactory) -> CaseResult;

/// The overlay cases by containerd's test names (plus berth's extras).
pub const OVERLAY_SUITE: &[(&str, OverlayCase)] = &[
    ("TestOverlayMounts", overlay_mounts),
    ("TestOverlayCommit", overlay_commit),
    ("TestOverlayOverlayMount", overlay_overlay_mount),
    ("TestOverlayOverlayRead", overlay_overlay_read),
    ("TestOverlayView", overlay_view),
    (
        "TestOverlayConfiguredIndexNotOverridden",
        overlay_configured_index_not_overridden,
    ),
    ("TestOverlayUpperdirLabel", overlay_upperdir_label),
    ("WritableDir", overlay_writable_dir),
    ("LowersLimit", overlay_lowers_limit),
];

/// The plain factory: [`OverlaySnapshotter::with_options`].
pub fn default_factory(root: &Path, opts: OverlayOptions) -> crate::Result<OverlaySnapshotter> {
    OverlaySnapshotter::with_options(root, opts)
}

fn harness(factory: &OverlayFactory, opts: OverlayOptions) -> Result<Harness, Failure> {
    Harness::with(|root| {
        factory(root, opts)
            .map(|s| Box::new(s) as Box<dyn Snapshotter>)
            .ctx("open overlay snapshotter")
    })
}

fn snap_path(h: &Harness, id: u64, leaf: &str) -> Result<String, Failure> {
    let root: PathBuf = std::fs::canonicalize(&h.root).ctx("canonicalize root")?;
    Ok(root
        .join("snapshots")
        .join(id.to_string())
        .join(leaf)
        .to_string_lossy()
        .into_owned())
}

fn single(mounts: &[Mount]) -> Result<&Mount, Failure> {
    ensure!(mounts.len() == 1, "want one mount, got {mounts:?}");
    Ok(&mounts[0])
}

fn index_off_expected() -> bool {
    Path::new(INDEX_PARAMETER).exists()
}

/// `TestOverlayMounts`: Prepare("") is one `rw,rbind` bind of `snapshots/1/fs`.
pub fn overlay_mounts(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    let mounts = h.sn.prepare("/tmp/test", "", &gc_opts()).ctx("prepare")?;
    let m = single(&mounts)?;
    ensure!(m.kind == "bind", "kind {}", m.kind);
    let want = snap_path(&h, 1, "fs")?;
    ensure!(m.source == want, "source {} want {want}", m.source);
    ensure!(
        m.options == ["rw", "rbind"],
        "options {:?} want [rw, rbind]",
        m.options
    );
    Ok(())
}

/// `TestOverlayCommit`: commit with a rebase parent, containerd's table.
pub fn overlay_commit(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    ensure!(
        h.sn.supports(Capability::Rebase),
        "overlay must advertise rebase"
    );
    let o = gc_opts();
    create_snapshot(&h, "base", "", &[])?;
    create_snapshot(&h, "new", "", &[])?;
    h.sn.prepare("active-parent", "", &o)
        .ctx("prepare active parent")?;
    // (initial parent, rebase parent, expected parent or None for an error)
    let table: [(&str, &str, Option<&str>); 6] = [
        ("", "", Some("")),
        ("", "base", Some("base")),
        ("base", "base", Some("base")),
        ("base", "", Some("base")),
        ("base", "new", None),
        ("", "active-parent", None),
    ];
    for (i, (initial, rebase, want)) in table.iter().enumerate() {
        let key = format!("commit-{i}-active");
        let name = format!("commit-{i}");
        let mounts = h.sn.prepare(&key, initial, &o).ctx("prepare")?;
        {
            let m = h.mount(&mounts)?;
            std::fs::write(m.path().join("foo"), b"hi\n").ctx("write")?;
            m.finish().ctx("unmount")?;
        }
        let opts = Opts {
            labels: o.labels.clone(),
            parent: Some(rebase.to_string()),
        };
        let r = h.sn.commit(&name, &key, &opts);
        match want {
            Some(parent) => {
                r.ctx(&format!("row {i}: commit"))?;
                let st = h.sn.stat(&name).ctx("stat")?;
                ensure!(
                    st.parent == *parent,
                    "row {i}: parent {:?} want {parent:?}",
                    st.parent
                );
                let u = h.sn.usage(&name).ctx("usage")?;
                ensure!(u.size > 0 && u.inodes >= 2, "row {i}: usage {u:?}");
            }
            None => {
                ensure!(
                    r.is_err(),
                    "row {i}: rebase {initial:?}->{rebase:?} must fail"
                );
                let st = h.sn.stat(&key).ctx("stat after failed commit")?;
                ensure!(
                    st.kind == crate::Kind::Active,
                    "row {i}: key no longer active"
                );
            }
        }
    }
    Ok(())
}

/// `TestOverlayOverlayMount`: exact option order `workdir, upperdir, lowerdir, [index=off]`.
pub fn overlay_overlay_mount(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    let o = gc_opts();
    h.sn.prepare("/tmp/test", "", &o).ctx("prepare")?;
    h.sn.commit("base", "/tmp/test", &o).ctx("commit")?;
    let mounts =
        h.sn.prepare("/tmp/layer2", "base", &o)
            .ctx("prepare layer2")?;
    let m = single(&mounts)?;
    ensure!(m.kind == "overlay", "kind {}", m.kind);
    ensure!(m.source == "overlay", "source {}", m.source);
    let mut want = vec![
        format!("workdir={}", snap_path(&h, 2, "work")?),
        format!("upperdir={}", snap_path(&h, 2, "fs")?),
        format!("lowerdir={}", snap_path(&h, 1, "fs")?),
    ];
    if index_off_expected() {
        want.push("index=off".into());
    }
    ensure!(m.options == want, "options {:?} want {want:?}", m.options);
    Ok(())
}

/// `TestOverlayOverlayRead`: a real overlay mount shows the lower file.
pub fn overlay_overlay_read(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    create_snapshot(
        &h,
        "base",
        "",
        &[super::fstest::create_file("/foo", b"hi", 0o644)],
    )?;
    let mounts =
        h.sn.prepare("/tmp/layer2", "base", &gc_opts())
            .ctx("prepare")?;
    let m = h.mount(&mounts)?;
    let data = std::fs::read(m.path().join("foo")).ctx("read")?;
    m.finish().ctx("unmount")?;
    ensure!(data == b"hi", "read {data:?}");
    Ok(())
}

/// `TestOverlayView`: a view on one parent is a ro bind of it; on two, a lowerdir-only
/// overlay.
pub fn overlay_view(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    create_snapshot(
        &h,
        "base",
        "",
        &[super::fstest::create_file("/foo", b"hi", 0o644)],
    )?;
    create_snapshot(
        &h,
        "second",
        "base",
        &[super::fstest::create_file("/bar", b"x", 0o644)],
    )?;
    let mounts = h.sn.view("/tmp/view1", "base", &gc_opts()).ctx("view1")?;
    let m = single(&mounts)?;
    ensure!(m.kind == "bind", "view1 kind {}", m.kind);
    let want = snap_path(&h, 1, "fs")?;
    ensure!(m.source == want, "view1 source {} want {want}", m.source);
    ensure!(
        m.options == ["ro", "rbind"],
        "view1 options {:?}",
        m.options
    );

    let mounts = h.sn.view("/tmp/view2", "second", &gc_opts()).ctx("view2")?;
    let m = single(&mounts)?;
    ensure!(m.kind == "overlay", "view2 kind {}", m.kind);
    let mut want = vec![format!(
        "lowerdir={}:{}",
        snap_path(&h, 2, "fs")?,
        snap_path(&h, 1, "fs")?
    )];
    if index_off_expected() {
        want.push("index=off".into());
    }
    ensure!(
        m.options == want,
        "view2 options {:?} want {want:?}",
        m.options
    );
    let t = h.mount(&mounts)?;
    ensure!(
        std::fs::read(t.path().join("foo")).ctx("read foo")? == b"hi"
            && std::fs::read(t.path().join("bar")).ctx("read bar")? == b"x",
        "view2 content"
    );
    ensure!(
        std::fs::write(t.path().join("new"), b"x").is_err(),
        "view2 must be read-only"
    );
    t.finish().ctx("unmount")?;
    Ok(())
}

/// `TestOverlayConfiguredIndexNotOverridden`: a user `index=on` is kept, no `index=off`.
pub fn overlay_configured_index_not_overridden(factory: &OverlayFactory) -> CaseResult {
    let opts = OverlayOptions {
        mount_options: vec!["index=on".into()],
        ..OverlayOptions::default()
    };
    let h = harness(factory, opts)?;
    create_snapshot(&h, "base", "", &[])?;
    let mounts = h.sn.prepare("layer2", "base", &gc_opts()).ctx("prepare")?;
    let m = single(&mounts)?;
    ensure!(
        m.options.iter().any(|o| o == "index=on"),
        "index=on missing: {:?}",
        m.options
    );
    ensure!(
        !m.options.iter().any(|o| o == "index=off"),
        "index=off added: {:?}",
        m.options
    );
    Ok(())
}

/// containerd's `WithUpperdirLabel`: stat, walk and update report the upper directory.
pub fn overlay_upperdir_label(factory: &OverlayFactory) -> CaseResult {
    let opts = OverlayOptions {
        upperdir_label: true,
        ..OverlayOptions::default()
    };
    let h = harness(factory, opts)?;
    create_snapshot(&h, "base", "", &[])?;
    let mounts = h.sn.prepare("active", "base", &gc_opts()).ctx("prepare")?;
    let upper = single(&mounts)?
        .upperdir()
        .ok_or_else(|| Failure::new("no upperdir"))?;
    let label = crate::overlay::LABEL_UPPERDIR;
    let st = h.sn.stat("active").ctx("stat")?;
    ensure!(
        st.labels.get(label).map(PathBuf::from) == Some(upper.clone()),
        "stat label {:?} want {upper:?}",
        st.labels.get(label)
    );
    let base = h.sn.stat("base").ctx("stat base")?;
    let want = snap_path(&h, 1, "fs")?;
    ensure!(
        base.labels.get(label) == Some(&want),
        "committed label {:?} want {want}",
        base.labels.get(label)
    );
    let mut walked = 0;
    h.sn.walk(&[&format!("labels.\"{label}\"")], &mut |i| {
        walked += 1;
        if !i.labels.contains_key(label) {
            return Err(crate::Error::invalid(
                i.name.clone(),
                "walked info lacks the label",
            ));
        }
        Ok(())
    })
    .ctx("walk")?;
    ensure!(walked == 2, "walk matched {walked}");
    let mut upd = st.clone();
    upd.labels.insert("x".into(), "y".into());
    let out = h.sn.update(&upd, &["labels.x"]).ctx("update")?;
    ensure!(
        out.labels.contains_key(label),
        "update result lacks the label"
    );
    Ok(())
}

/// berth: `writable_dir` of an active snapshot is its upper directory, overlay layout.
pub fn overlay_writable_dir(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    create_snapshot(&h, "base", "", &[])?;
    let mounts = h.sn.prepare("active", "base", &gc_opts()).ctx("prepare")?;
    let wd =
        h.sn.writable_dir("active")
            .ctx("writable_dir")?
            .ok_or_else(|| Failure::new("overlay must expose its upper directory"))?;
    ensure!(
        wd.layout == DirLayout::OverlayUpper,
        "layout {:?}",
        wd.layout
    );
    let upper = single(&mounts)?.upperdir();
    ensure!(
        upper.as_deref() == Some(wd.path.as_path()),
        "{wd:?} vs {upper:?}"
    );
    std::fs::write(wd.path.join("direct"), b"d").ctx("write upper")?;
    let m = h.mount(&mounts)?;
    let data = std::fs::read(m.path().join("direct")).ctx("read through mount")?;
    m.finish().ctx("unmount")?;
    ensure!(data == b"d", "content");
    match h.sn.writable_dir("base") {
        Err(e) if e.kind() == ErrorKind::FailedPrecondition => Ok(()),
        other => Err(Failure::new(format!(
            "writable_dir of a committed snapshot: {other:?}"
        ))),
    }
}

/// berth: a chain deeper than 500 layers is refused at prepare (InvalidArgument), and so is
/// a rebase that would exceed it.
pub fn overlay_lowers_limit(factory: &OverlayFactory) -> CaseResult {
    let h = harness(factory, OverlayOptions::default())?;
    let o = gc_opts();
    let mut parent = String::new();
    for i in 0..=crate::mount::MAX_LOWERS {
        let key = format!("l{i}-a");
        let name = format!("l{i}");
        h.sn.prepare(&key, &parent, &o).ctx("prepare")?;
        h.sn.commit(&name, &key, &o).ctx("commit")?;
        parent = name;
    }
    // `parent` now has 500 ancestors: a child would need 501 lowers.
    match h.sn.prepare("too-deep", &parent, &o) {
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {
            ensure!(
                e.to_string().contains("500"),
                "error should name the limit: {e}"
            );
        }
        other => return Err(Failure::new(format!("501 lowers: {other:?}"))),
    }
    ensure!(
        h.sn.stat("too-deep").is_err(),
        "refused prepare left a record"
    );
    h.sn.prepare("rebase-me", "", &o).ctx("prepare")?;
    let r = h.sn.commit(
        "rebased",
        "rebase-me",
        &o.clone().with_parent(parent.clone()),
    );
    ensure!(
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::InvalidArgument),
        "rebase past the limit: {r:?}"
    );
    // One below the limit still prepares.
    h.sn.prepare("ok-depth", "l499", &o)
        .ctx("prepare at 500 lowers")?;
    Ok(())
}
