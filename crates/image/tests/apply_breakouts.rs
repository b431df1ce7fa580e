//! containerd's `TestBreakouts` (pkg/archive/tar_test.go), all 34 cases, each run with the
//! openat2 resolver and with the userspace fallback.
//!
//! Where containerd's cases aim at `/etc`, these aim at a "host" directory outside the root (its
//! absolute path), so a broken resolver would change that directory — which every case checks is
//! untouched — and never the machine's `/etc`. The root sits nine directories below the sandbox,
//! deeper than any `..` chain here, so relative escapes also stay in the sandbox.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use apply_support::{Sandbox, TarBuilder};
use berth_image::apply::{ApplyStats, Error};

const UNBROKEN: &[u8] = b"unbroken";

/// Runs one case with both resolvers: `pre` lays the pre-existing tree, `tar` builds the layer,
/// `check` judges the result; the area outside the root must be unchanged.
fn case(
    pre: impl Fn(&Sandbox),
    tar: impl Fn(&Sandbox) -> Vec<u8>,
    check: impl Fn(&Sandbox, Result<ApplyStats, Error>),
) {
    for userspace in [false, true] {
        let sb = Sandbox::new();
        pre(&sb);
        let before = sb.outside();
        let layer = tar(&sb);
        let res = sb.apply(&layer, userspace);
        check(&sb, res);
        assert_eq!(
            sb.outside(),
            before,
            "files outside the root changed (userspace resolver: {userspace})"
        );
    }
}

fn ok(res: Result<ApplyStats, Error>) {
    if let Err(e) = res {
        panic!("apply failed: {e}");
    }
}

fn invalid(res: Result<ApplyStats, Error>) {
    match res {
        Err(e) => assert!(
            e.is_invalid_archive(),
            "expected an invalid archive, got {e}"
        ),
        Ok(_) => panic!("expected an invalid archive error, apply succeeded"),
    }
}

fn unbroken_at(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("unbroken")).unwrap(), UNBROKEN);
}

/// `os.SameFile` after resolving both paths inside the root (std follows symlinks, so we resolve
/// each path's symlinks ourselves, re-rooted).
fn same_file(sb: &Sandbox, a: &str, b: &str) -> bool {
    let ia = std::fs::metadata(resolve_in_root(&sb.root, a)).unwrap();
    let ib = std::fs::metadata(resolve_in_root(&sb.root, b)).unwrap();
    (ia.dev(), ia.ino()) == (ib.dev(), ib.ino())
}

/// Lexical in-root resolution of a path, following symlinks re-rooted (test helper mirroring
/// continuity's `fs.RootPath`).
fn resolve_in_root(root: &Path, p: &str) -> std::path::PathBuf {
    let mut stack: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<String> = p.split('/').map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let mut cur = root.to_path_buf();
        cur.extend(&stack);
        cur.push(&c);
        match std::fs::read_link(&cur) {
            Ok(t) => {
                hops += 1;
                assert!(hops < 255);
                let t = t.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    stack.clear();
                }
                for part in t.split('/').rev() {
                    queue.push_front(part.to_owned());
                }
            }
            Err(_) => stack.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    out
}

fn etc_pre(sb: &Sandbox) {
    let etc = sb.in_root(&sb.etc());
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), b"inside").unwrap();
}

#[test]
fn symlink_absolute() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o755)
                .symlink(&e, "localetc")
                .file("/localetc/unbroken", UNBROKEN, 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            unbroken_at(&sb.in_root(&sb.etc()));
        },
    );
}

#[test]
fn symlink_up_and_out() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o755)
                .dir("dummy", 0o755)
                .symlink(&format!("/dummy/..{e}"), "localetc")
                .file("/localetc/unbroken", UNBROKEN, 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            unbroken_at(&sb.in_root(&sb.etc()));
        },
    );
}

#[test]
fn symlink_multiple_absolute() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o755)
                .dir("dummy", 0o755)
                .symlink(&e, "/dummy/etc")
                .symlink("/dummy/etc", "localetc")
                .file("/dummy/etc/unbroken", UNBROKEN, 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            unbroken_at(&sb.in_root(&sb.etc()));
        },
    );
}

#[test]
fn symlink_multiple_relative() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o755)
                .dir("dummy", 0o755)
                .symlink(&e, "/dummy/etc")
                .symlink("./dummy/etc", "localetc")
                .file("/dummy/etc/unbroken", UNBROKEN, 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            unbroken_at(&sb.in_root(&sb.etc()));
        },
    );
}

#[test]
fn symlink_empty_file() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o755)
                .file(&format!("{e}/emptied"), b"notempty", 0o644)
                .symlink(&e, "localetc")
                .file("/localetc/emptied", b"", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            let p = sb.in_root(&sb.etc()).join("emptied");
            assert!(std::fs::read(p).unwrap().is_empty());
        },
    );
}

/// The hardlink cases: a tree with `etc/passwd` inside the root, a crafted link, and the check
/// that the link is the root's `etc/passwd`.
fn hardlink_case(build: impl Fn(&mut TarBuilder), link: &'static str) {
    case(
        |_| {},
        |_| {
            let mut t = TarBuilder::new();
            t.dir("etc", 0o770).file("/etc/passwd", b"inside", 0o644);
            build(&mut t);
            t.finish()
        },
        |sb, r| {
            ok(r);
            assert!(same_file(sb, link, "/etc/passwd"));
        },
    );
}

#[test]
fn hardlink_relative() {
    hardlink_case(
        |t| {
            t.dir("breakouts", 0o755)
                .symlink("../../etc", "breakouts/d1")
                .link("/breakouts/d1/passwd", "breakouts/mypasswd");
        },
        "/breakouts/mypasswd",
    );
}

#[test]
fn hardlink_down_and_out() {
    hardlink_case(
        |t| {
            t.dir("breakouts", 0o755)
                .dir("downandout", 0o755)
                .symlink("../downandout/../../etc", "breakouts/d1")
                .link("/breakouts/d1/passwd", "breakouts/mypasswd");
        },
        "/breakouts/mypasswd",
    );
}

#[test]
fn hardlink_absolute() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .file(&format!("{e}/passwd"), b"inside", 0o644)
                .symlink(&e, "localetc")
                .link("/localetc/passwd", "localpasswd")
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(same_file(
                sb,
                "localpasswd",
                &format!("{}/passwd", sb.etc())
            ));
        },
    );
}

#[test]
fn hardlink_relative_long() {
    hardlink_case(
        |t| {
            t.symlink("../../../../../../../etc", "localetc")
                .link("/localetc/passwd", "localpasswd");
        },
        "localpasswd",
    );
}

#[test]
fn hardlink_relative_up_and_out() {
    hardlink_case(
        |t| {
            t.symlink("upandout/../../../etc", "localetc")
                .link("/localetc/passwd", "localpasswd");
        },
        "localpasswd",
    );
}

#[test]
fn hardlink_direct_relative() {
    hardlink_case(
        |t| {
            t.link("../../../../../etc/passwd", "localpasswd");
        },
        "localpasswd",
    );
}

#[test]
fn hardlink_direct_absolute() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .file(&format!("{e}/passwd"), b"inside", 0o644)
                .link(&format!("{e}/passwd"), "localpasswd")
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(same_file(
                sb,
                "localpasswd",
                &format!("{}/passwd", sb.etc())
            ));
        },
    );
}

/// The symlink-name cases: a symlink with a degenerate name, then a hardlink that must land in
/// the root.
fn symlink_name_case(name: &'static str, link: &'static str) {
    case(
        |_| {},
        move |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .file(&format!("{e}/passwd"), b"inside", 0o644)
                .symlink(&format!("{e}/"), name)
                .link(&format!("{e}/passwd"), link)
                .finish()
        },
        move |sb, r| {
            ok(r);
            assert!(same_file(sb, link, &format!("{}/passwd", sb.etc())));
            assert!(std::fs::symlink_metadata(resolve_in_root(&sb.root, link)).is_ok());
        },
    );
}

#[test]
fn symlink_parent_directory() {
    symlink_name_case("..", "localpasswd");
}

#[test]
fn symlink_empty_filename() {
    symlink_name_case("", "localpasswd");
}

#[test]
fn symlink_parent_relative() {
    symlink_name_case("localetc/sub/..", "/localetc/localpasswd");
}

#[test]
fn symlink_slash_ended() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .file(&format!("{e}/passwd"), b"inside", 0o644)
                .dir("localetc/", 0o770)
                .link(&format!("{e}/passwd"), "/localetc/localpasswd")
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(sb.root.join("localetc").is_dir());
            assert!(same_file(
                sb,
                "/localetc/localpasswd",
                &format!("{}/passwd", sb.etc())
            ));
        },
    );
}

fn override_directory_case(target: fn(&Sandbox) -> String) {
    case(
        |sb| {
            etc_pre(sb);
            std::fs::create_dir_all(sb.root.join("etc")).unwrap();
            std::fs::write(sb.root.join("etc/passwd"), b"inside").unwrap();
            std::fs::create_dir(sb.root.join("localetc")).unwrap();
        },
        move |sb| {
            TarBuilder::new()
                .symlink(&target(sb), "localetc")
                .link(&format!("{}/passwd", target(sb)), "/localetc/localpasswd")
                .finish()
        },
        move |sb, r| {
            ok(r);
            assert!(
                std::fs::symlink_metadata(sb.root.join("localetc"))
                    .unwrap()
                    .is_symlink()
            );
            assert!(same_file(
                sb,
                "/localetc/localpasswd",
                &format!("{}/passwd", target(sb))
            ));
        },
    );
}

#[test]
fn symlink_override_directory() {
    override_directory_case(Sandbox::etc);
}

#[test]
fn symlink_override_directory_relative() {
    override_directory_case(|_| "../../etc".to_owned());
}

#[test]
fn directory_override_symlink() {
    case(
        |sb| {
            etc_pre(sb);
            std::os::unix::fs::symlink(sb.etc(), sb.root.join("localetc")).unwrap();
        },
        |sb| {
            TarBuilder::new()
                .dir("/localetc/", 0o755)
                .link(&format!("{}/passwd", sb.etc()), "/localetc/localpasswd")
                .finish()
        },
        |sb, r| {
            ok(r);
            let m = std::fs::symlink_metadata(sb.root.join("localetc")).unwrap();
            assert!(
                m.is_dir(),
                "the symlink must have been replaced by a directory"
            );
            assert!(same_file(
                sb,
                "/localetc/localpasswd",
                &format!("{}/passwd", sb.etc())
            ));
        },
    );
}

#[test]
fn directory_override_symlink_and_hardlink() {
    case(
        |sb| {
            std::fs::create_dir(sb.root.join("etc")).unwrap();
            std::fs::write(sb.root.join("etc/passwd"), b"inside").unwrap();
            std::os::unix::fs::symlink("etc", sb.root.join("localetc")).unwrap();
            std::fs::hard_link(sb.root.join("etc/passwd"), sb.root.join("etc/localpasswd"))
                .unwrap();
        },
        |_| {
            TarBuilder::new()
                .dir("/localetc/", 0o755)
                .file("/localetc/localpasswd", b"different", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(!same_file(sb, "/localetc/localpasswd", "/etc/passwd"));
            assert_eq!(
                std::fs::read(sb.root.join("etc/passwd")).unwrap(),
                b"inside"
            );
            assert_eq!(
                std::fs::read(sb.root.join("localetc/localpasswd")).unwrap(),
                b"different"
            );
        },
    );
}

/// Pre-existing `etc/passwd` inside the root (for the whiteout cases).
fn whiteout_pre(sb: &Sandbox) {
    std::fs::create_dir(sb.root.join("etc")).unwrap();
    std::fs::write(sb.root.join("etc/passwd"), b"all users").unwrap();
}

fn whiteout_invalid(name: &'static str) {
    case(
        whiteout_pre,
        |_| TarBuilder::new().file(name, b"", 0o644).finish(),
        |sb, r| {
            invalid(r);
            assert_eq!(
                std::fs::read(sb.root.join("etc/passwd")).unwrap(),
                b"all users"
            );
        },
    );
}

#[test]
fn whiteout_root_parent() {
    whiteout_invalid(".wh...");
}

#[test]
fn whiteout_parent() {
    whiteout_invalid("etc/.wh...");
}

#[test]
fn whiteout_root() {
    whiteout_invalid(".wh..");
}

#[test]
fn whiteout_current_directory() {
    whiteout_invalid("etc/.wh..");
}

#[test]
fn whiteout_symlink() {
    case(
        |sb| {
            whiteout_pre(sb);
            etc_pre(sb);
            std::os::unix::fs::symlink(sb.etc(), sb.root.join("localetc")).unwrap();
        },
        |_| TarBuilder::new().file(".wh.localetc", b"", 0o644).finish(),
        |sb, r| {
            ok(r);
            assert_eq!(
                std::fs::read(sb.root.join("etc/passwd")).unwrap(),
                b"all users"
            );
            assert_eq!(
                std::fs::read(sb.in_root(&sb.etc()).join("passwd")).unwrap(),
                b"inside"
            );
            assert!(std::fs::symlink_metadata(sb.root.join("localetc")).is_err());
        },
    );
}

#[test]
fn whiteout_symlink_path() {
    case(
        |sb| {
            etc_pre(sb);
            std::fs::write(sb.in_root(&sb.etc()).join("whitedout"), b"ahhhh whiteout").unwrap();
            std::os::unix::fs::symlink(sb.etc(), sb.root.join("localetc")).unwrap();
        },
        |_| {
            TarBuilder::new()
                .file("localetc/.wh.whitedout", b"", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            let etc = sb.in_root(&sb.etc());
            assert_eq!(std::fs::read(etc.join("passwd")).unwrap(), b"inside");
            assert!(!etc.join("whitedout").exists());
            // The host's `whitedout` survives (also covered by the outside check).
            assert!(sb.host.join("etc/whitedout").exists());
        },
    );
}

#[test]
fn whiteout_directory_name() {
    case(
        |sb| {
            whiteout_pre(sb);
            std::os::unix::fs::symlink(sb.etc(), sb.root.join("localetc")).unwrap();
        },
        |_| {
            TarBuilder::new()
                .file(".wh.etc/somefile", b"non-empty", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert_eq!(
                std::fs::read(sb.root.join("etc/passwd")).unwrap(),
                b"all users"
            );
            assert_eq!(
                std::fs::read(sb.root.join(".wh.etc/somefile")).unwrap(),
                b"non-empty"
            );
        },
    );
}

#[test]
fn whiteout_dead_symlink_parent() {
    case(
        |sb| {
            whiteout_pre(sb);
            std::os::unix::fs::symlink("/dne", sb.root.join("localetc")).unwrap();
        },
        |_| {
            TarBuilder::new()
                .file("localetc/.wh.etc", b"", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert_eq!(
                std::fs::read(sb.root.join("etc/passwd")).unwrap(),
                b"all users"
            );
        },
    );
}

#[test]
fn whiteout_relative_path() {
    case(
        |sb| {
            whiteout_pre(sb);
            std::os::unix::fs::symlink("/dne", sb.root.join("localetc")).unwrap();
        },
        |_| {
            TarBuilder::new()
                .file("dne/../.wh.etc", b"", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(!sb.root.join("etc").exists());
            assert!(std::fs::symlink_metadata(sb.root.join("localetc")).is_ok());
        },
    );
}

/// CVE-2025-47290: `foo` becomes a symlink to the host between two entries; the write through
/// it must land inside the root.
#[test]
fn symlink_override_path() {
    case(
        |_| {},
        |sb| {
            let host = sb.host.display().to_string();
            TarBuilder::new()
                .dir("foo", 0o755)
                .symlink(&host, "foo")
                .file("foo/x", b"written through foo", 0o644)
                .dir("foo", 0o755)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(!sb.host.join("x").exists());
            assert!(sb.root.join("foo").is_dir());
            assert_eq!(
                std::fs::read(sb.in_root(&sb.host.display().to_string()).join("x")).unwrap(),
                b"written through foo"
            );
        },
    );
}

#[test]
fn hardlink_symlink_before_create_target() {
    case(
        |_| {},
        |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .symlink(&format!("{e}/passwd"), "localpasswd")
                .link("localpasswd", "localpasswd-dup")
                .file(&format!("{e}/passwd"), b"after", 0o644)
                .finish()
        },
        |sb, r| {
            ok(r);
            assert!(same_file(
                sb,
                "localpasswd-dup",
                &format!("{}/passwd", sb.etc())
            ));
            let m = std::fs::symlink_metadata(sb.root.join("localpasswd-dup")).unwrap();
            assert!(m.is_symlink(), "a hardlink to a symlink is the symlink");
        },
    );
}

fn hardlink_symlink_case(target: fn(&Sandbox) -> String) {
    case(
        |_| {},
        move |sb| {
            let e = sb.etc();
            TarBuilder::new()
                .dir(&e, 0o770)
                .file(&format!("{e}/passwd"), b"inside", 0o644)
                .symlink(&target(sb), "passwdlink")
                .link("/passwdlink", "localpasswd")
                .finish()
        },
        |sb, r| {
            ok(r);
            let a = sb.root.join("localpasswd");
            let b = sb.root.join("passwdlink");
            assert!(std::fs::symlink_metadata(&a).unwrap().is_symlink());
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap()
            );
            assert!(same_file(
                sb,
                "/localpasswd",
                &format!("{}/passwd", sb.etc())
            ));
        },
    );
}

#[test]
fn hardlink_symlink_relative() {
    hardlink_symlink_case(|sb| format!("../../../../..{}/passwd", sb.etc()));
}

#[test]
fn hardlink_symlink_absolute() {
    hardlink_symlink_case(|sb| format!("{}/passwd", sb.etc()));
}

/// CVE-2021-32760: chmod must never follow the symlink a hardlink points to.
#[test]
fn hardlink_symlink_chmod() {
    case(
        |sb| {
            let p = sb.host.join("perm400");
            std::fs::write(&p, b"...").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
            let ep = sb.host.join("also-exists-outside-root");
            std::fs::write(&ep, b"...").unwrap();
            std::fs::set_permissions(&ep, std::fs::Permissions::from_mode(0o640)).unwrap();
        },
        |sb| {
            let p = sb.host.join("perm400").display().to_string();
            let ep = sb
                .host
                .join("also-exists-outside-root")
                .display()
                .to_string();
            TarBuilder::new()
                .symlink(&p, &ep)
                .link(&ep, "sketchylink")
                .finish()
        },
        |sb, r| {
            ok(r);
            let m = std::fs::symlink_metadata(sb.host.join("perm400")).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o400);
            assert!(
                std::fs::symlink_metadata(sb.root.join("sketchylink"))
                    .unwrap()
                    .is_symlink()
            );
        },
    );
}
