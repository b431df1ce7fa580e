//! The overlay-specific tests of containerd's overlay snapshotter, for real.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(test)]
mod tests {
    use berth_snapshot::testsuite::overlay as ov;

    macro_rules! cases {
        ($($test:ident => $case:path;)*) => {
            $(
                #[test]
                fn $test() {
                    if !crate::common::privileged("overlay") {
                        return;
                    }
                    if let Err(e) = $case(&ov::default_factory) {
                        panic!("{}: {e}", stringify!($test));
                    }
                }
            )*
        };
    }

    cases! {
        overlay_mounts => ov::overlay_mounts;
        overlay_commit_rebase_table => ov::overlay_commit;
        overlay_overlay_mount_option_order => ov::overlay_overlay_mount;
        overlay_overlay_read => ov::overlay_overlay_read;
        overlay_view => ov::overlay_view;
        overlay_configured_index_not_overridden => ov::overlay_configured_index_not_overridden;
        overlay_upperdir_label => ov::overlay_upperdir_label;
    overlay_writable_dir => ov::overlay_writable_dir;
        overlay_lowers_limit => ov::overlay_lowers_limit;
    }
}
