//! containerd's SnapshotterSuite against both backends, overlay and native, for real (root, real
//! mounts): the same case list runs once per backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

/// Expands to one `#[test]` per suite case for the backend named by `$backend`.
macro_rules! suite {
    ($backend:literal, $factory:path) => {
        suite!(@cases $backend, $factory;
            basic => cases::basic, "Basic";
            stat_active => cases::stat_active, "StatActive";
            stat_comitted => cases::stat_committed, "StatComitted";
            transitivity_test => cases::transitivity, "TransitivityTest";
            preare_view_failingtest => cases::prepare_view_failing, "PreareViewFailingtest";
            update => cases::update, "Update";
            remove => cases::remove, "Remove";
            walk => cases::walk, "Walk";
            layer_fileupdate => cases::layer_file_update, "LayerFileupdate";
            remove_directory_in_lower_layer => cases::remove_directory_in_lower_layer, "RemoveDirectoryInLowerLayer";
            chown => cases::chown, "Chown";
            directory_permission_on_commit => cases::directory_permission_on_commit, "DirectoryPermissionOnCommit";
            remove_intermediate_snapshot => cases::remove_intermediate_snapshot, "RemoveIntermediateSnapshot";
            deleted_files_in_child_snapshot => cases::deleted_files_in_child_snapshot, "DeletedFilesInChildSnapshot";
            move_file_from_lower_layer => cases::move_file_from_lower_layer, "MoveFileFromLowerLayer";
            view_readonly => cases::view_readonly, "ViewReadonly";
            stat_in_walk => cases::stat_in_walk, "StatInWalk";
            close_twice => cases::close_twice, "CloseTwice";
            root_permission => cases::root_permission, "RootPermission";
            rename => cases::rename, "Rename";
            layers_128_mount => cases::layers_128_mount, "128LayersMount";
            special_files => cases::special_files, "SpecialFiles";
        );
    };
    (@cases $backend:literal, $factory:path; $($test:ident => $case:path, $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                crate::common::run($backend, &$factory, $case, $name);
            }
        )*
    };
}

#[cfg(test)]
mod overlay {
    use berth_snapshot::testsuite::cases;

    suite!("overlay", crate::common::overlay_factory);
}

#[cfg(test)]
mod native {
    use berth_snapshot::testsuite::cases;

    suite!("native", crate::common::native_factory);
}

#[cfg(test)]
mod table {
    #[test]
    fn suite_table_lists_21_cases() {
        assert_eq!(berth_snapshot::testsuite::SNAPSHOTTER_SUITE.len(), 21);
    }
}
