//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::Path;

use berth_snapshot::testsuite::{CaseResult, Factory};
use berth_snapshot::{NativeSnapshotter, OverlaySnapshotter, Snapshotter};

/// Whether privileged tests can run. Outside CI a missing privilege skips with a reason;
/// with `CI` set it fails loudly.
pub fn privileged(what: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let overlay = berth_snapshot::overlay::overlay_supported();
    let missing = if !root {
        Some("not running as root")
    } else if what == "overlay" && !overlay {
        Some("overlayfs not available")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{what} tests need root and real mounts, but: {reason} (CI is set)")
        }
        Some(reason) => {
            eprintln!("skipping {what} test: {reason}");
            false
        }
    }
}

/// Opens an overlay snapshotter.
pub fn overlay_factory(root: &Path) -> berth_snapshot::Result<Box<dyn Snapshotter>> {
    Ok(Box::new(OverlaySnapshotter::new(root)?))
}

/// Opens a native snapshotter.
pub fn native_factory(root: &Path) -> berth_snapshot::Result<Box<dyn Snapshotter>> {
    Ok(Box::new(NativeSnapshotter::new(root)?))
}

/// Runs one case unless privileges are missing (outside CI).
pub fn run(backend: &str, factory: &Factory, case: fn(&Factory) -> CaseResult, name: &str) {
    if !privileged(backend) {
        return;
    }
    if let Err(e) = case(factory) {
        panic!("{backend}/{name}: {e}");
    }
}
