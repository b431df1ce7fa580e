//! Layer apply behaviour: device ranges, whiteouts and opaque directories, overlay conversion,
//! metadata preservation, corrupt streams, diffID checks, the size bound and progress.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use apply_support::{Sandbox, TarBuilder, is_root, skip_or_fail};
use berth_image::apply::{ApplyOptions, Error, apply_layer, apply_layer_file};
use berth_image::compression::Compressor;
use berth_oci::{Compression, Digest, ErrorKind};

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut w = Compressor::new(Vec::new(), c, None).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn apply(sb: &Sandbox, layer: &[u8]) -> Result<berth_image::apply::ApplyStats, Error> {
    apply_layer(&sb.root, layer, ApplyOptions::default())
}

/// A device entry whose major/minor fields hold raw GNU base-256 numbers.
fn device_tar(major: i64, minor: i64) -> Vec<u8> {
    let mut h = TarBuilder::header(tar::EntryType::Char, "dev/bad", 0o600, 0);
    let bytes = h.as_mut_bytes();
    let mut put = |off: usize, v: i64| {
        let mut field = v.to_be_bytes();
        if v >= 0 {
            field[0] |= 0x80;
        }
        bytes[off..off + 8].copy_from_slice(&field);
    };
    put(329, major);
    put(337, minor);
    TarBuilder::new().raw(h, &[]).finish()
}

fn assert_invalid(r: Result<berth_image::apply::ApplyStats, Error>) {
    let e = r.expect_err("must be refused");
    assert!(e.is_invalid_archive(), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn device_range_major_over_u32() {
    let sb = Sandbox::new();
    assert_invalid(apply(&sb, &device_tar(1 << 32, 1)));
    assert!(!sb.root.join("dev/bad").exists());
}

#[test]
fn device_range_minor_over_u32() {
    let sb = Sandbox::new();
    assert_invalid(apply(&sb, &device_tar(1, 1 << 32)));
}

#[test]
fn device_range_negative_major() {
    let sb = Sandbox::new();
    assert_invalid(apply(&sb, &device_tar(-1, 1)));
}

#[test]
fn device_range_negative_minor() {
    let sb = Sandbox::new();
    assert_invalid(apply(&sb, &device_tar(1, -1)));
}

#[test]
fn devices_and_fifos_are_created() {
    if !is_root() {
        return skip_or_fail("mknod of a character device needs root");
    }
    let sb = Sandbox::new();
    let mut h = TarBuilder::header(tar::EntryType::Char, "null", 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    let mut f = TarBuilder::header(tar::EntryType::Fifo, "fifo", 0o640, 0);
    f.set_mtime(1_600_000_000);
    let layer = TarBuilder::new().raw(h, &[]).raw(f, &[]).finish();
    apply(&sb, &layer).unwrap();
    let m = std::fs::symlink_metadata(sb.root.join("null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
    let m = std::fs::symlink_metadata(sb.root.join("fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.mtime(), 1_600_000_000);
}

#[test]
fn directories_are_created_without_parent_entries() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.root.join("etc")).unwrap();
    let layer = TarBuilder::new()
        .dir("/etc/subdir", 0o755)
        .dir("/etc/subdir2/", 0o755)
        .dir("/etc/subdir2/more", 0o755)
        .dir("/other/noparent-1/1", 0o755)
        .dir("/other/noparent-2/2/", 0o755)
        .finish();
    apply(&sb, &layer).unwrap();
    for d in [
        "etc/subdir",
        "etc/subdir2",
        "etc/subdir2/more",
        "other/noparent-1/1",
        "other/noparent-2/2",
    ] {
        assert!(sb.root.join(d).is_dir(), "{d}");
    }
}

#[test]
fn whiteout_with_empty_name_is_invalid() {
    let sb = Sandbox::new();
    assert_invalid(apply(
        &sb,
        &TarBuilder::new().file("etc/.wh.", b"", 0o644).finish(),
    ));
}

#[test]
fn whiteouts_remove_files_and_trees() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.root.join("a/tree/deep")).unwrap();
    std::fs::write(sb.root.join("a/tree/deep/f"), b"x").unwrap();
    std::fs::write(sb.root.join("a/file"), b"x").unwrap();
    std::fs::write(sb.root.join("a/keep"), b"x").unwrap();
    let layer = TarBuilder::new()
        .file("a/.wh.tree", b"", 0o644)
        .file("a/.wh.file", b"", 0o644)
        .file("a/.wh.absent", b"", 0o644)
        .finish();
    let stats = apply(&sb, &layer).unwrap();
    assert_eq!(stats.entries, 3);
    assert!(!sb.root.join("a/tree").exists());
    assert!(!sb.root.join("a/file").exists());
    assert!(sb.root.join("a/keep").exists());
    assert!(!sb.root.join("a/.wh.tree").exists());
}

#[test]
fn opaque_directory_hides_lower_children_only() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.root.join("d/old-dir/sub")).unwrap();
    std::fs::write(sb.root.join("d/old-file"), b"old").unwrap();
    std::fs::write(sb.root.join("d/replaced"), b"old").unwrap();
    std::fs::write(sb.root.join("outside-d"), b"stays").unwrap();
    // Entries of this layer before and after the marker both survive.
    let layer = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/replaced", b"new", 0o644)
        .dir("d/newdir", 0o755)
        .file("d/newdir/f", b"f", 0o644)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/after", b"after", 0o644)
        .finish();
    apply(&sb, &layer).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(sb.root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "newdir", "replaced"]);
    assert_eq!(std::fs::read(sb.root.join("d/replaced")).unwrap(), b"new");
    assert_eq!(std::fs::read(sb.root.join("d/newdir/f")).unwrap(), b"f");
    assert!(sb.root.join("outside-d").exists());
}

#[test]
fn overlay_whiteouts_are_converted() {
    if !is_root() {
        return skip_or_fail("char device 0/0 and trusted.* xattrs need root");
    }
    let sb = Sandbox::new();
    let layer = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/kept", b"k", 0o644)
        .file(".wh.gone", b"", 0o644)
        .file("e/.wh.sub", b"", 0o644)
        .finish();
    apply_layer(
        &sb.root,
        &layer[..],
        ApplyOptions::default().with_overlay_whiteouts(true),
    )
    .unwrap();
    for p in ["gone", "e/sub"] {
        let m = std::fs::symlink_metadata(sb.root.join(p)).unwrap();
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert_eq!(
        xattr::get(sb.root.join("d"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(sb.root.join("d/kept").exists());
    assert!(!sb.root.join("d/.wh..wh..opq").exists());
    assert!(!sb.root.join(".wh.gone").exists());
}

#[test]
fn missing_parents_copy_lower_layer_metadata() {
    if !is_root() {
        return skip_or_fail("chown to other users needs root");
    }
    let sb = Sandbox::new();
    let lower = sb.tmp.path().join("lower");
    std::fs::create_dir_all(lower.join("d/e")).unwrap();
    std::os::unix::fs::chown(lower.join("d"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(lower.join("d"), std::fs::Permissions::from_mode(0o710)).unwrap();
    filetime::set_file_mtime(
        lower.join("d"),
        filetime::FileTime::from_unix_time(1_234_567, 0),
    )
    .unwrap();
    let layer = TarBuilder::new()
        .file("d/e/f", b"x", 0o644)
        .file("new/g", b"y", 0o644)
        .finish();
    apply_layer(
        &sb.root,
        &layer[..],
        ApplyOptions::default()
            .with_overlay_whiteouts(true)
            .with_parent_layers(vec![lower.clone()]),
    )
    .unwrap();
    let d = std::fs::metadata(sb.root.join("d")).unwrap();
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (1234, 4321, 0o710));
    assert_eq!(d.mtime(), 1_234_567);
    let n = std::fs::metadata(sb.root.join("new")).unwrap();
    assert_eq!(n.mode() & 0o7777, 0o755 & !umask());
}

/// The process umask, read without changing it (tests run in parallel threads).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn metadata_is_preserved() {
    if !is_root() {
        return skip_or_fail("chown to other users needs root");
    }
    let sb = Sandbox::new();
    let mut t = TarBuilder::new();
    let mut dir = TarBuilder::header(tar::EntryType::Directory, "dir/", 0o750, 0);
    dir.set_uid(1000);
    dir.set_gid(1001);
    dir.set_mtime(1_500_000_000);
    t.with_pax(&[("SCHILY.xattr.user.dirattr", b"dv")])
        .raw(dir, &[]);
    let mut file = TarBuilder::header(tar::EntryType::Regular, "dir/suid", 0o4755, 5);
    file.set_uid(1000);
    file.set_gid(1000);
    t.with_pax(&[
        ("SCHILY.xattr.user.key", b"value"),
        (
            "SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ),
        ("mtime", b"1600000000.25"),
    ])
    .raw(file, b"hello");
    let mut link = TarBuilder::header(tar::EntryType::Symlink, "dir/ln", 0o777, 0);
    link.as_gnu_mut().unwrap().linkname[..4].copy_from_slice(b"suid");
    link.set_uid(1002);
    link.set_gid(1003);
    link.set_mtime(1_400_000_000);
    t.raw(link, &[]);
    t.link("dir/suid", "dir/hard");
    let layer = t.finish();
    apply(&sb, &layer).unwrap();

    let d = std::fs::symlink_metadata(sb.root.join("dir")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 1001));
    assert_eq!(
        d.mtime(),
        1_500_000_000,
        "directory mtime is set after its children"
    );
    assert_eq!(
        xattr::get(sb.root.join("dir"), "user.dirattr").unwrap(),
        Some(b"dv".to_vec())
    );
    let f = std::fs::symlink_metadata(sb.root.join("dir/suid")).unwrap();
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o4755, 1000, 1000));
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_600_000_000, 250_000_000));
    assert_eq!(f.nlink(), 2);
    assert_eq!(
        xattr::get(sb.root.join("dir/suid"), "user.key").unwrap(),
        Some(b"value".to_vec())
    );
    assert!(
        xattr::get(sb.root.join("dir/suid"), "security.capability")
            .unwrap()
            .is_some()
    );
    let h = std::fs::symlink_metadata(sb.root.join("dir/hard")).unwrap();
    assert_eq!(h.ino(), f.ino());
    let l = std::fs::symlink_metadata(sb.root.join("dir/ln")).unwrap();
    assert!(l.is_symlink());
    assert_eq!((l.uid(), l.gid(), l.mtime()), (1002, 1003, 1_400_000_000));
    assert_eq!(
        std::fs::read_link(sb.root.join("dir/ln")).unwrap().to_str(),
        Some("suid")
    );
}

#[test]
fn out_of_range_mtimes_are_clamped_to_the_epoch() {
    let sb = Sandbox::new();
    let layer = TarBuilder::new()
        .with_pax(&[("mtime", b"-100")])
        .file("old", b"", 0o644)
        .with_pax(&[("mtime", b"99999999999999")])
        .file("future", b"", 0o644)
        .finish();
    apply(&sb, &layer).unwrap();
    for p in ["old", "future"] {
        assert_eq!(
            std::fs::metadata(sb.root.join(p)).unwrap().mtime(),
            0,
            "{p}"
        );
    }
}

#[test]
fn trusted_xattrs_are_refused() {
    let sb = Sandbox::new();
    let layer = TarBuilder::new()
        .with_pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("d", 0o755)
        .finish();
    let e = apply(&sb, &layer).unwrap_err();
    assert!(matches!(e, Error::ForbiddenXattr { .. }), "{e}");
}

#[test]
fn no_same_owner_keeps_the_callers_ids() {
    let sb = Sandbox::new();
    let mut h = TarBuilder::header(tar::EntryType::Regular, "f", 0o644, 1);
    h.set_uid(4242);
    h.set_gid(4243);
    let layer = TarBuilder::new().raw(h, b"x").finish();
    apply_layer(
        &sb.root,
        &layer[..],
        ApplyOptions::default().with_no_same_owner(true),
    )
    .unwrap();
    let m = std::fs::metadata(sb.root.join("f")).unwrap();
    assert_eq!(m.uid(), rustix::process::geteuid().as_raw());
}

#[test]
fn existing_objects_are_replaced_and_directories_merged() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.root.join("was-dir/child")).unwrap();
    std::fs::write(sb.root.join("was-file"), b"x").unwrap();
    std::fs::create_dir(sb.root.join("merge")).unwrap();
    std::fs::write(sb.root.join("merge/lower"), b"lower").unwrap();
    std::os::unix::fs::symlink("/nowhere", sb.root.join("was-link")).unwrap();
    let layer = TarBuilder::new()
        .file("was-dir", b"now a file", 0o600)
        .dir("was-file", 0o711)
        .dir("merge", 0o700)
        .file("merge/upper", b"upper", 0o644)
        .file("was-link", b"file", 0o644)
        .finish();
    apply(&sb, &layer).unwrap();
    assert_eq!(
        std::fs::read(sb.root.join("was-dir")).unwrap(),
        b"now a file"
    );
    assert!(sb.root.join("was-file").is_dir());
    assert_eq!(
        std::fs::metadata(sb.root.join("merge")).unwrap().mode() & 0o777,
        0o700
    );
    assert!(sb.root.join("merge/lower").exists() && sb.root.join("merge/upper").exists());
    assert!(
        std::fs::symlink_metadata(sb.root.join("was-link"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn root_entry_sets_root_metadata() {
    let sb = Sandbox::new();
    let layer = TarBuilder::new()
        .dir("./", 0o711)
        .file("./f", b"x", 0o644)
        .finish();
    apply(&sb, &layer).unwrap();
    let m = std::fs::metadata(&sb.root).unwrap();
    assert_eq!(m.mode() & 0o777, 0o711);
    assert_eq!(m.mtime(), 1_700_000_000);
}

fn sample_tar() -> Vec<u8> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    TarBuilder::new()
        .dir("a", 0o755)
        .file("a/big", &big, 0o644)
        .file("a/small", b"small", 0o644)
        .finish()
}

#[test]
fn diff_id_is_the_digest_of_the_decompressed_stream() {
    let mut tar = sample_tar();
    tar.extend_from_slice(&[0u8; 4096]); // trailing bytes after end-of-archive count too
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let sb = Sandbox::new();
        let blob = compress(c, &tar);
        let stats = apply_layer(
            &sb.root,
            &blob[..],
            ApplyOptions::default()
                .with_compression(c)
                .with_expected_diff_id(Digest::sha256(&tar)),
        )
        .unwrap();
        assert_eq!(stats.diff_id, Digest::sha256(&tar));
        assert_eq!(stats.uncompressed_size, tar.len() as u64);
        assert_eq!(stats.compressed_size, blob.len() as u64);
        assert_eq!(stats.compression, c);
        assert_eq!(stats.entries, 3);
    }
}

#[test]
fn blob_digest_is_verified_in_the_same_pass() {
    let tar = sample_tar();
    let blob = compress(Compression::Zstd, &tar);
    let sb = Sandbox::new();
    apply_layer(
        &sb.root,
        &blob[..],
        ApplyOptions::default().with_expected_digest(Digest::sha256(&blob)),
    )
    .unwrap();
    let sb = Sandbox::new();
    let e = apply_layer(
        &sb.root,
        &blob[..],
        ApplyOptions::default().with_expected_digest(Digest::sha256(&tar)),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn empty_numeric_fields_read_as_zero() {
    let sb = Sandbox::new();
    let mut h = TarBuilder::header(tar::EntryType::Regular, "f", 0o644, 1);
    let raw = h.as_mut_bytes();
    raw[108..116].fill(0); // uid
    raw[116..124].fill(0); // gid
    raw[136..148].fill(0); // mtime
    let layer = TarBuilder::new().raw(h, b"x").finish();
    apply_layer(
        &sb.root,
        &layer[..],
        ApplyOptions::default().with_no_same_owner(true),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(sb.root.join("f")).unwrap().mtime(), 0);
}

#[test]
fn diff_id_mismatch_is_a_failed_precondition() {
    let sb = Sandbox::new();
    let e = apply_layer(
        &sb.root,
        &sample_tar()[..],
        ApplyOptions::default().with_expected_diff_id(Digest::sha256(b"other")),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DiffIdMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn compression_mismatch_names_the_blob() {
    let sb = Sandbox::new();
    let blob = compress(Compression::Gzip, &sample_tar());
    let e = apply_layer(
        &sb.root,
        &blob[..],
        ApplyOptions::default()
            .with_compression(Compression::Zstd)
            .with_blob("sha256:feedface"),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Compression(_)), "{e}");
    assert!(e.to_string().contains("sha256:feedface"));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn corrupt_streams_give_typed_errors() {
    for c in [Compression::Gzip, Compression::Zstd] {
        let blob = compress(c, &sample_tar());
        let mut corrupt = blob.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 64] {
            *b ^= 0x5A;
        }
        let sb = Sandbox::new();
        let e = apply(&sb, &corrupt).unwrap_err();
        assert!(
            matches!(e, Error::Decompress { compression, .. } if compression == c),
            "{c:?}: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);

        let truncated = &blob[..blob.len() / 2];
        let sb = Sandbox::new();
        let e = apply(&sb, truncated).unwrap_err();
        assert!(
            matches!(e, Error::Decompress { .. } | Error::Tar { .. }),
            "{c:?} truncated: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn truncated_tar_is_a_tar_error() {
    let tar = sample_tar();
    let sb = Sandbox::new();
    let e = apply(&sb, &tar[..700]).unwrap_err();
    assert!(matches!(e, Error::Tar { .. }), "{e}");
}

#[test]
fn decompression_bomb_is_bounded() {
    let zeros = vec![0u8; 8 << 20];
    let tar = TarBuilder::new().file("bomb", &zeros, 0o644).finish();
    for c in [Compression::Gzip, Compression::Zstd] {
        let blob = compress(c, &tar);
        assert!(blob.len() < 200_000);
        let sb = Sandbox::new();
        let e = apply_layer(
            &sb.root,
            &blob[..],
            ApplyOptions::default().with_max_uncompressed(1 << 20),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::TooLarge { limit, .. } if limit == 1 << 20),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    }
}

#[test]
fn progress_reports_compressed_bytes() {
    let tar = sample_tar();
    let blob = compress(Compression::Gzip, &tar);
    let sb = Sandbox::new();
    let mut seen: Vec<(u64, Option<u64>)> = Vec::new();
    let mut cb = |done: u64, total: Option<u64>| seen.push((done, total));
    apply_layer(
        &sb.root,
        &blob[..],
        ApplyOptions::default()
            .with_total_size(blob.len() as u64)
            .with_progress(&mut cb),
    )
    .unwrap();
    assert!(seen.len() >= 3);
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(
        seen.last().copied(),
        Some((blob.len() as u64, Some(blob.len() as u64)))
    );
}

#[test]
fn apply_layer_file_autodetects_compression() {
    let tar = sample_tar();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let sb = Sandbox::new();
        let file = sb.tmp.path().join("layer.blob");
        std::fs::write(&file, compress(c, &tar)).unwrap();
        let stats = apply_layer_file(&file, &sb.root, ApplyOptions::default()).unwrap();
        assert_eq!(stats.compression, c);
        assert_eq!(stats.diff_id, Digest::sha256(&tar));
        assert_eq!(std::fs::read(sb.root.join("a/small")).unwrap(), b"small");
    }
}

#[test]
fn missing_root_is_not_found() {
    let sb = Sandbox::new();
    let e = apply_layer(
        &sb.root.join("nope"),
        &sample_tar()[..],
        ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}
