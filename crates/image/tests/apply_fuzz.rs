//! Randomised layers (a fixed-seed generator, so failures reproduce): names with `..`, `.`,
//! absolute paths, symlinks to the host area and up the tree, hardlinks through them,
//! whiteouts and opaque markers, applied three layers deep into two roots, one per resolver.
//! Whatever each layer does, apply must return (an error is fine), both resolvers must build
//! the same tree, and nothing outside the roots may change.
//!
//! Relative symlink targets climb at most one level each, and the root sits 48 directories
//! below the sandbox, so even a broken resolver following the kernel's 40-link limit could not
//! climb out of the sandbox.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use apply_support::{Sandbox, TarBuilder, snapshot, tree_diff};
use berth_image::apply::{ApplyOptions, apply_layer};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &["a", "b", "etc", "x", "..", ".", ""];

fn path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3);
    let mut p = String::new();
    if rng.below(3) == 0 {
        p.push('/');
    }
    for i in 0..depth {
        if i > 0 {
            p.push('/');
        }
        p.push_str(rng.pick(NAMES));
    }
    p
}

fn layer(rng: &mut Rng, sb: &Sandbox) -> Vec<u8> {
    let host = sb.host.display().to_string();
    let mut t = TarBuilder::new();
    let mut files: Vec<String> = Vec::new();
    for _ in 0..(4 + rng.below(12)) {
        let p = path(rng);
        match rng.below(10) {
            0 | 1 => {
                t.dir(&p, 0o755);
            }
            2 | 3 => {
                let f = format!("{p}/f{}", rng.below(3));
                t.file(&f, b"payload", 0o644);
                files.push(f);
            }
            4 => {
                let target = match rng.below(4) {
                    0 => host.clone(),
                    1 => format!("{host}/etc"),
                    2 => format!("../{}", rng.pick(&["a", "b", "etc"])),
                    _ => format!("/{}", rng.pick(&["a", "b", "etc", "x"])),
                };
                t.symlink(&target, &p);
            }
            5 => {
                // Mostly links to files of this layer (possibly through symlinks since), some
                // to the host's passwd or anywhere.
                let target = match (rng.below(4), files.is_empty()) {
                    (0, _) => format!("{host}/etc/passwd"),
                    (1, _) | (_, true) => path(rng),
                    _ => files[rng.below(files.len())].clone(),
                };
                t.link(&target, &format!("{p}/l{}", rng.below(3)));
            }
            6 => {
                let name = format!("{p}/.wh.{}", rng.pick(&["a", "b", "etc", "x", "f0"]));
                t.file(&name, b"", 0o644);
            }
            7 => {
                t.file(&format!("{p}/.wh..wh..opq"), b"", 0o644);
            }
            _ => {
                t.file(&format!("{p}/passwd"), b"overwritten?", 0o600);
            }
        }
    }
    t.finish()
}

/// Applies three random layers into two roots of one sandbox, one with each resolver; both
/// must agree and nothing outside the roots may change. Returns (layers applied, entries).
fn run(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let sb = Sandbox::with_depth(48);
    std::fs::write(sb.host.join("etc/passwd"), b"host passwd").unwrap();
    let root2 = sb.root.with_file_name("root2");
    std::fs::create_dir(&root2).unwrap();
    let outside = || -> BTreeMap<PathBuf, String> {
        sb.outside()
            .into_iter()
            .filter(|(p, _)| !p.starts_with(&root2))
            .collect()
    };
    let before = outside();
    let (mut ok, mut entries) = (0, 0);
    for _ in 0..3 {
        let l = layer(&mut rng, &sb);
        let a = apply_layer(&sb.root, &l[..], ApplyOptions::default());
        let b = apply_layer(
            &root2,
            &l[..],
            ApplyOptions::default().with_userspace_resolver(true),
        );
        assert_eq!(
            a.as_ref().map(|s| s.entries).ok(),
            b.as_ref().map(|s| s.entries).ok(),
            "seed {seed}: resolvers disagree: {a:?} vs {b:?}"
        );
        match a {
            Ok(stats) => {
                ok += 1;
                entries += stats.entries;
            }
            Err(e) if std::env::var_os("FUZZ_DEBUG").is_some() => eprintln!("ERR {e}"),
            Err(_) => {}
        }
        assert_eq!(
            outside(),
            before,
            "seed {seed} changed files outside the roots"
        );
    }
    let d = tree_diff(&snapshot(&sb.root, true), &snapshot(&root2, true));
    assert!(
        d.is_empty(),
        "seed {seed}: resolvers built different trees: {d:#?}"
    );
    (ok, entries)
}

#[test]
fn random_layers_never_escape_and_both_resolvers_agree() {
    let (mut ok, mut entries) = (0, 0);
    for seed in 1..=100u64 {
        let (o, e) = run(seed.wrapping_mul(0x9E37_79B9));
        ok += o;
        entries += e;
    }
    eprintln!("{ok} of 300 layers applied, {entries} entries");
    assert!(ok > 100 && entries > 800, "{ok} layers, {entries} entries");
}
