//! Runs containerd's content-store conformance suite against [`ContentStore`], one test per case.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::path::Path;

use berth_image::content::{ContentStore, testsuite};

fn open(root: &Path) -> berth_image::Result<ContentStore> {
    ContentStore::open(root)
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            testsuite::$name(&open);
        }
    )*};
}

suite!(
    writer,
    update_status,
    commit_exists,
    resume,
    resume_truncate,
    resume_discard,
    resume_copy,
    resume_copy_seeker,
    resume_copy_reader_at,
    small_blob,
    labels,
    commit_error_state,
);

/// The suite also passes when every step goes through a second handle on the same root (as a
/// second process would see it).
#[test]
fn all_cases_through_a_reopened_root() {
    testsuite::run_all(&|root: &Path| {
        let first = ContentStore::open(root)?;
        drop(first);
        ContentStore::open(root)
    });
}
