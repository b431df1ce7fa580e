//! Unit tests of option parsing and (as root) of every mount strategy.

use super::overlay::common_dir;
use super::*;

#[test]
fn options_split_into_flags_and_data() {
    let p = parse_options(&[
        "ro".into(),
        "rbind".into(),
        "nosuid".into(),
        "index=off".into(),
        "rprivate".into(),
    ]);
    assert!(
        p.flags
            .contains(MountFlags::RDONLY | MountFlags::BIND | MountFlags::REC)
    );
    assert!(p.flags.contains(MountFlags::NOSUID));
    assert_eq!(p.data, vec!["index=off".to_string()]);
    assert!(p.propagation.contains(MountPropagationFlags::PRIVATE));
    let p = parse_options(&["ro".into(), "rw".into()]);
    assert!(!p.flags.contains(MountFlags::RDONLY));
}

#[test]
fn accessors_read_overlay_options() {
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            "workdir=/r/1/work".into(),
            "upperdir=/r/1/fs".into(),
            "lowerdir=/r/3/fs:/r/2/fs".into(),
        ],
    };
    assert_eq!(m.workdir().unwrap(), Path::new("/r/1/work"));
    assert_eq!(m.upperdir().unwrap(), Path::new("/r/1/fs"));
    assert_eq!(
        m.lowerdirs(),
        vec![PathBuf::from("/r/3/fs"), PathBuf::from("/r/2/fs")]
    );
    assert!(!m.is_readonly());
    assert!(Mount::bind("/x", true).is_readonly());
    assert!(Mount::bind("/x", true).is_bind());
}

#[test]
fn common_dir_finds_snapshots_dir() {
    let p = vec![
        PathBuf::from("/a/snapshots/10/fs"),
        PathBuf::from("/a/snapshots/1/fs"),
    ];
    assert_eq!(common_dir(&p).unwrap(), Path::new("/a/snapshots"));
    assert!(common_dir(&[PathBuf::from("/x/fs"), PathBuf::from("/y/fs")]).is_none());
}

#[test]
fn too_many_lowers_is_invalid_argument() {
    let lowers: Vec<String> = (0..=MAX_LOWERS)
        .map(|i| format!("/nonexistent/{i}/fs"))
        .collect();
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![format!("lowerdir={}", lowers.join(":"))],
    };
    let err = m.mount(Path::new("/nonexistent-target")).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("500"));
}

/// Root and overlayfs are needed; outside CI their absence skips with a reason.
fn privileged() -> bool {
    let ok = rustix::process::geteuid().is_root() && crate::overlay::overlay_supported();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "mount tests need root and overlayfs (CI is set)"
        );
        eprintln!("skipping: needs root and overlayfs");
    }
    ok
}

/// 128 lowers under a long directory name, so the plain lowerdir list exceeds a page.
fn deep_stack() -> (tempfile::TempDir, Mount, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("x".repeat(60)).join("snapshots");
    let mut lowers = Vec::new();
    for i in 0..128 {
        let fs_dir = base.join(i.to_string()).join("fs");
        fs::create_dir_all(&fs_dir).unwrap();
        fs::write(fs_dir.join(format!("f{i}")), i.to_string()).unwrap();
        fs::write(fs_dir.join("top"), i.to_string()).unwrap();
        lowers.push(fs_dir.to_string_lossy().into_owned());
    }
    lowers.reverse(); // nearest (127) first
    let upper = base.join("up/fs");
    let work = base.join("up/work");
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: None,
        options: vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lowers.join(":")),
        ],
    };
    assert!(m.options.join(",").len() > rustix::param::page_size());
    let target = tmp.path().join("mnt");
    fs::create_dir(&target).unwrap();
    (tmp, m, target)
}

fn check_stack(target: &Path) {
    assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "127");
    assert_eq!(fs::read_to_string(target.join("f0")).unwrap(), "0");
    assert_eq!(fs::read_to_string(target.join("f77")).unwrap(), "77");
    fs::write(target.join("new"), b"upper").unwrap();
}

#[test]
fn deep_overlay_mounts_with_fsconfig_lowerdir_plus() {
    if !privileged() {
        return;
    }
    let (_tmp, m, target) = deep_stack();
    let p = parse_options(&m.options);
    match overlay_fsconfig(&m.source, &target, &p) {
        Ok(()) => {}
        Err(FsconfigError::Unsupported(why)) => {
            eprintln!("kernel lacks lowerdir+ ({why}); compaction covers this kernel");
            return;
        }
        Err(FsconfigError::Failed(e)) => panic!("{e}"),
    }
    let guard = MountGuard::new(target.clone());
    check_stack(&target);
    guard.unmount().unwrap();
}

#[test]
fn deep_overlay_mounts_with_compacted_relative_lowerdirs() {
    if !privileged() {
        return;
    }
    let (tmp, m, target) = deep_stack();
    let p = parse_options(&m.options);
    overlay_compacted(&m.source, &target, &p).unwrap();
    let guard = MountGuard::new(target.clone());
    check_stack(&target);
    guard.unmount().unwrap();
    // The process working directory is untouched by the helper thread's chdir.
    assert_ne!(
        std::env::current_dir().unwrap(),
        tmp.path().join("x".repeat(60))
    );
}

#[test]
fn mount_picks_a_strategy_for_deep_overlays() {
    if !privileged() {
        return;
    }
    let (_tmp, m, target) = deep_stack();
    let guard = m.mount(&target).unwrap();
    check_stack(&target);
    drop(guard);
    assert!(
        fs::read_dir(&target).unwrap().next().is_none(),
        "still mounted"
    );
}

#[test]
fn readonly_bind_rejects_writes_and_guard_unmounts() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    {
        let _g = Mount::bind(src.to_string_lossy(), true)
            .mount(&dst)
            .unwrap();
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"x");
        let err = fs::write(dst.join("g"), b"y").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }
    assert!(!dst.join("f").exists(), "guard did not unmount");
    unmount_all(&dst).unwrap();
}

#[test]
fn temp_mount_removes_its_directory() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let tm = TempMount::new(&[Mount::bind(src.to_string_lossy(), false)], tmp.path()).unwrap();
    let p = tm.path().to_path_buf();
    fs::write(p.join("w"), b"1").unwrap();
    tm.finish().unwrap();
    assert!(!p.exists());
    assert_eq!(fs::read(src.join("w")).unwrap(), b"1");
}
