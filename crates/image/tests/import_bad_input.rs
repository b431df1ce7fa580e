//! Bad input: every malformed source gives a typed error naming the blob or entry, records no
//! name, and leaves no blob in the store whose bytes do not match its digest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::fs;
use std::path::{Path, PathBuf};

use berth_image::build::{ImageBuilder, LayerBuilder, write_layer_to_layout};
use berth_image::export::LayoutWriter;
use berth_image::import::{self, Error, ErrorKind, ImportOptions};
use berth_oci::{Compression, Digest};
use import_common::*;

const NAME: &str = "docker.io/berth-test/bad:v1";

/// A small valid image in an OCI layout directory.
struct Layout {
    dir: PathBuf,
    manifest: Digest,
    config: Digest,
    layer: Digest,
}

fn make_layout(base: &Path) -> Layout {
    let rootfs = base.join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hostname"), b"bad-input\n").unwrap();
    let dir = base.join("layout");
    let mut w = LayoutWriter::open(&dir).unwrap();
    let layer =
        write_layer_to_layout(&mut w, &LayerBuilder::new(Compression::Gzip), &rootfs).unwrap();
    let built = ImageBuilder::new()
        .cmd(["/bin/sh"])
        .layer(layer.clone(), "test")
        .finish()
        .unwrap();
    built.write_to_layout(&mut w, NAME).unwrap();
    w.finish().unwrap();
    Layout {
        dir,
        manifest: built.descriptor.digest.clone(),
        config: built.config_digest.clone(),
        layer: layer.digest,
    }
}

fn blob(l: &Layout, d: &Digest) -> PathBuf {
    l.dir.join("blobs/sha256").join(d.hex())
}

/// Replaces a blob file's content (blob files may be read-only).
fn overwrite(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, bytes).unwrap();
}

/// Rewrites a JSON blob through `edit` and re-points its referrers: returns the new digest.
fn rewrite_manifest(l: &Layout, edit: impl FnOnce(&mut serde_json::Value)) -> Digest {
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(l, &l.manifest)).unwrap()).unwrap();
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = Digest::sha256(&bytes);
    fs::write(blob(l, &d), &bytes).unwrap();
    let index_path = l.dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = d.to_string().into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    d
}

/// Imports `path` into a fresh store, expecting failure; checks nothing was named and every
/// stored blob is intact.
fn import_fails(path: &Path) -> Error {
    let t = temp_store();
    let err = import::import(&t.store, path, &ImportOptions::default()).unwrap_err();
    assert!(
        t.store.images().list(&[]).unwrap().is_empty(),
        "a name was recorded: {err}"
    );
    assert!(t.store.verify().unwrap().is_ok());
    assert!(
        t.store.leases().list().unwrap().is_empty(),
        "lease left behind"
    );
    err
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-bad-input-")
        .tempdir()
        .unwrap()
}

/// Packs `entries` (name, bytes) into a tar, writing names raw (no validation).
fn raw_tar(path: &Path, entries: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        let bytes = name.as_bytes();
        h.as_mut_bytes()[..bytes.len()].copy_from_slice(bytes);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.finish().unwrap();
}

/// Packs the layout directory into an oci-archive.
fn pack(l: &Layout, path: &Path) {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for name in ["oci-layout", "index.json"] {
        entries.push((name.into(), fs::read(l.dir.join(name)).unwrap()));
    }
    for e in fs::read_dir(l.dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        entries.push((
            format!("blobs/sha256/{}", e.file_name().to_string_lossy()),
            fs::read(e.path()).unwrap(),
        ));
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    raw_tar(path, &refs);
}

#[test]
fn valid_synthetic_layout_imports() {
    let t = tmp();
    let l = make_layout(t.path());
    let s = temp_store();
    let r = import::import(&s.store, &l.dir, &ImportOptions::default()).unwrap();
    assert_eq!(r.images[0].name, NAME);
    assert_eq!(r.images[0].target.digest, l.manifest);
    for d in [&l.manifest, &l.config, &l.layer] {
        assert!(s.store.exists(d));
    }
    let archive = t.path().join("ok.tar");
    pack(&l, &archive);
    let s2 = temp_store();
    import::import(&s2.store, &archive, &ImportOptions::default()).unwrap();
}

#[test]
fn oversized_json_is_refused_by_size() {
    let t = tmp();
    let l = make_layout(t.path());
    // index.json over 4 MiB.
    let index = l.dir.join("index.json");
    let mut big = fs::read(&index).unwrap();
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b' ', 4 << 20));
    big.push(b'}');
    fs::write(&index, &big).unwrap();
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::JsonTooLarge { what, .. } if what.contains("index.json")),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    // A manifest descriptor declaring more than 4 MiB.
    let t = tmp();
    let l = make_layout(t.path());
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(l.dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["size"] = (5u64 << 20).into();
    fs::write(
        l.dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::JsonTooLarge { what, .. } if *what == l.manifest.to_string()),
        "{err}"
    );
}

#[test]
fn malformed_json_names_the_document() {
    let t = tmp();
    let l = make_layout(t.path());
    fs::write(l.dir.join("index.json"), b"{\"manifests\": [").unwrap();
    let err = import_fails(&l.dir);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("index.json"), "{err}");

    let t = tmp();
    let l = make_layout(t.path());
    let bad = b"not json at all";
    let d = Digest::sha256(bad);
    fs::write(blob(&l, &d), bad).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(l.dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = d.to_string().into();
    index["manifests"][0]["size"] = bad.len().into();
    fs::write(
        l.dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = import_fails(&l.dir);
    assert!(err.to_string().contains(&d.to_string()), "{err}");
}

#[test]
fn unknown_media_types_are_refused() {
    let t = tmp();
    let l = make_layout(t.path());
    rewrite_manifest(&l, |m| {
        m["layers"][0]["mediaType"] = "application/x-unknown".into()
    });
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::UnsupportedMediaType { media_type, digest } if media_type == "application/x-unknown" && *digest == l.layer),
        "{err}"
    );
    // An index entry of unknown type.
    let t = tmp();
    let l = make_layout(t.path());
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(l.dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["mediaType"] = "application/vnd.example+json".into();
    fs::write(
        l.dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let err = import_fails(&l.dir);
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
}

#[test]
fn digest_and_size_mismatches_name_the_blob() {
    // A layer whose bytes changed (same size).
    let t = tmp();
    let l = make_layout(t.path());
    let mut bytes = fs::read(blob(&l, &l.layer)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    overwrite(&blob(&l, &l.layer), &bytes);
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::BlobMismatch { digest, .. } if *digest == l.layer),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    // A config whose bytes changed.
    let t = tmp();
    let l = make_layout(t.path());
    let mut bytes = fs::read(blob(&l, &l.config)).unwrap();
    bytes[0] = b' ';
    overwrite(&blob(&l, &l.config), &bytes);
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::BlobMismatch { digest, .. } if *digest == l.config),
        "{err}"
    );

    // A layer descriptor with the wrong size.
    let t = tmp();
    let l = make_layout(t.path());
    rewrite_manifest(&l, |m| {
        let size = m["layers"][0]["size"].as_u64().unwrap();
        m["layers"][0]["size"] = (size + 1).into();
    });
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::BlobMismatch { digest, .. } if *digest == l.layer),
        "{err}"
    );

    // The same, inside an archive: the bytes are streamed into the store and refused there.
    let t = tmp();
    let l = make_layout(t.path());
    let mut bytes = fs::read(blob(&l, &l.layer)).unwrap();
    bytes[10] ^= 0x55;
    overwrite(&blob(&l, &l.layer), &bytes);
    let archive = t.path().join("bad.tar");
    pack(&l, &archive);
    let err = import_fails(&archive);
    assert!(
        matches!(&err, Error::BlobMismatch { digest, .. } if *digest == l.layer),
        "{err}"
    );
}

#[test]
fn a_stored_blob_is_not_trusted_for_a_wrong_source() {
    // The store already has the layer; the source then offers a longer, corrupt file under the
    // same digest with a matching declared size: the import must still refuse it.
    let t = tmp();
    let l = make_layout(t.path());
    let s = temp_store();
    import::import(&s.store, &l.dir, &ImportOptions::default()).unwrap();
    let mut bytes = fs::read(blob(&l, &l.layer)).unwrap();
    bytes.push(0);
    overwrite(&blob(&l, &l.layer), &bytes);
    rewrite_manifest(&l, |m| {
        let size = m["layers"][0]["size"].as_u64().unwrap();
        m["layers"][0]["size"] = (size + 1).into();
    });
    s.store.images().delete(NAME).unwrap();
    let err = import::import(&s.store, &l.dir, &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::BlobMismatch { digest, .. } if *digest == l.layer),
        "{err}"
    );
    assert!(s.store.images().list(&[]).unwrap().is_empty());
    assert!(s.store.verify().unwrap().is_ok());
}

#[test]
fn missing_blobs_are_named() {
    let t = tmp();
    let l = make_layout(t.path());
    fs::remove_file(blob(&l, &l.layer)).unwrap();
    let err = import_fails(&l.dir);
    assert!(
        matches!(&err, Error::MissingBlob { digest, .. } if *digest == l.layer),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let t = tmp();
    let l = make_layout(t.path());
    fs::remove_file(l.dir.join("index.json")).unwrap();
    let err = import_fails(&l.dir);
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err}");
}

#[test]
fn truncated_and_corrupt_archives() {
    let t = tmp();
    let l = make_layout(t.path());
    let archive = t.path().join("ok.tar");
    pack(&l, &archive);
    let full = fs::read(&archive).unwrap();
    // Cut inside the data of the last entry, at an entry boundary, and before the end blocks.
    let mut cuts = vec![full.len() / 2, full.len() - 1024 - 100];
    let end_of_entries = {
        let mut a = tar::Archive::new(&full[..]);
        let mut end = 0;
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            end = e.raw_file_position() + e.size().div_ceil(512) * 512;
        }
        end as usize
    };
    cuts.push(end_of_entries);
    for cut in cuts {
        let path = t.path().join(format!("cut-{cut}.tar"));
        fs::write(&path, &full[..cut]).unwrap();
        let err = import_fails(&path);
        assert!(
            matches!(err, Error::Truncated { .. } | Error::Corrupt { .. }),
            "cut at {cut}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
    // A header whose checksum is wrong.
    let mut bad = full.clone();
    bad[1024 + 10] ^= 0x20; // inside the second header's name (oci-layout fills 0..1024)
    let path = t.path().join("corrupt.tar");
    fs::write(&path, &bad).unwrap();
    let err = import_fails(&path);
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Not a tar at all.
    let path = t.path().join("random.tar");
    fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = import_fails(&path);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn unsafe_and_duplicate_entry_names() {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let t = tmp();
    for (bad, reason) in [
        ("../evil", "contains '..'"),
        ("blobs/../../evil", "contains '..'"),
        ("/etc/passwd", "absolute path"),
    ] {
        let path = t.path().join("unsafe.tar");
        raw_tar(&path, &[("oci-layout", layout), (bad, b"x")]);
        let err = import_fails(&path);
        assert!(
            matches!(&err, Error::UnsafeName { name, reason: r, .. } if name == bad && *r == reason),
            "{bad}: {err}"
        );
    }
    let path = t.path().join("dup.tar");
    raw_tar(
        &path,
        &[
            ("oci-layout", layout),
            ("index.json", b"{}"),
            ("./index.json", b"{}"),
        ],
    );
    let err = import_fails(&path);
    assert!(
        matches!(&err, Error::DuplicateEntry { entry, .. } if entry == "index.json"),
        "{err}"
    );
}

#[test]
fn docker_archive_paths_and_links_stay_inside() {
    let t = tmp();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = Digest::sha256(config);
    let config_name = format!("{}.json", cd.hex());
    let path = t.path().join("docker.tar");
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["x:1"],"Layers":["../../etc/passwd"]}}]"#
    );
    raw_tar(
        &path,
        &[
            ("manifest.json", manifest.as_bytes()),
            (&config_name, config),
        ],
    );
    let err = import_fails(&path);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("../../etc/passwd"), "{err}");

    // A layer link pointing outside the archive.
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let manifest =
        format!(r#"[{{"Config":"{config_name}","RepoTags":["x:1"],"Layers":["abc/layer.tar"]}}]"#);
    for (name, data) in [
        ("manifest.json", manifest.as_bytes()),
        (config_name.as_str(), &config[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "abc/layer.tar", "../../../etc/shadow")
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let err = import_fails(&path);
    assert!(matches!(err, Error::UnsafeName { .. }), "{err}");

    // Layers that do not match the config's diffIDs.
    let layer = {
        let mut v = Vec::new();
        let mut tb = tar::Builder::new(&mut v);
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        tb.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        tb.finish().unwrap();
        drop(tb);
        v
    };
    let wrong = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::sha256(b"other")
    );
    let wd = Digest::sha256(wrong.as_bytes());
    let wname = format!("{}.json", wd.hex());
    let manifest =
        format!(r#"[{{"Config":"{wname}","RepoTags":["x:1"],"Layers":["l/layer.tar"]}}]"#);
    raw_tar(
        &path,
        &[
            ("manifest.json", manifest.as_bytes()),
            (&wname, wrong.as_bytes()),
            ("l/layer.tar", &layer),
        ],
    );
    let err = import_fails(&path);
    assert!(matches!(err, Error::InvalidImage { .. }), "{err}");
}
