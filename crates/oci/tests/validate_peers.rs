//! The default specs that runc and crun generate (`runc spec`, `crun spec`, both also with
//! `--rootless`) are valid OCI specs, so berth's validation must accept every one of them; and
//! a broken copy of each must be refused with every problem listed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_oci::{Error, validate, validate_json};

/// A scratch directory removed on drop, unique per process and call.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-oci-specs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The spec `tool spec [args]` writes, or `None` (with a skip message outside CI) when the tool
/// is missing.
fn generated_spec(tool: &str, args: &[&str]) -> Option<Vec<u8>> {
    let scratch = Scratch::new();
    let output = match Command::new(tool)
        .arg("spec")
        .args(args)
        .current_dir(&scratch.0)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("{tool} is required in CI: {e}");
            }
            eprintln!("skipping {tool}: {e}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "{tool} spec {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(std::fs::read(scratch.0.join("config.json")).unwrap())
}

#[test]
fn accepts_runc_and_crun_default_specs() {
    for tool in ["runc", "crun"] {
        for args in [&[][..], &["--rootless"][..]] {
            let Some(bytes) = generated_spec(tool, args) else {
                continue;
            };
            let spec = validate_json(&bytes)
                .unwrap_or_else(|e| panic!("{tool} spec {args:?} refused: {e}"));
            validate(&spec).unwrap();
        }
    }
}

#[test]
fn refuses_broken_copies_of_peer_specs_listing_every_problem() {
    let Some(bytes) = generated_spec("runc", &[]) else {
        return;
    };
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["ociVersion"] = "one".into();
    json["root"]["path"] = "".into();
    json["process"]["cwd"] = "home".into();
    json["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push("CAP_TELEPORT".into());
    json["process"]["rlimits"][0]["type"] = "RLIMIT_WISHES".into();
    json["mounts"][0]["destination"] = "proc".into();
    let namespaces = json["linux"]["namespaces"].as_array_mut().unwrap();
    let first = namespaces[0].clone();
    namespaces.push(first);
    let err = validate_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    let Error::InvalidSpec { problems } = &err else {
        panic!("unexpected {err}");
    };
    for needle in [
        "CAP_TELEPORT",
        "RLIMIT_WISHES",
        "ociVersion",
        "root.path: empty",
        "mounts[0].destination",
        "process.cwd",
        "duplicate namespace type",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 7, "{problems:#?}");
}
