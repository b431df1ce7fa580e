//! Several processes on one root: two child processes (this test binary re-run with an
//! environment variable) unpack the same 16-layer chain concurrently, following
//! containerd's unpack protocol (prepare under a random key, write, commit the chainID;
//! AlreadyExists means the other process won). The result must be one clean chain.
//! Also: writers killed with SIGKILL mid-operation leave a root that verifies, cleans up to
//! exactly one directory per record, and keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use berth_snapshot::{
        ErrorKind, Kind, NativeSnapshotter, Opts, OverlaySnapshotter, Snapshotter, testsuite,
        unpack_key,
    };

    const CHILD_ENV: &str = "BERTH_SNAPSHOT_MP_ROOT";
    const BACKEND_ENV: &str = "BERTH_SNAPSHOT_MP_BACKEND";
    const LAYERS: usize = 16;

    fn open(backend: &str, root: &Path) -> Box<dyn Snapshotter> {
        match backend {
            "overlay" => Box::new(OverlaySnapshotter::new(root).unwrap()),
            _ => Box::new(NativeSnapshotter::new(root).unwrap()),
        }
    }

    /// What one process does: unpack the chain, tolerating the other process.
    fn unpack_chain(sn: &dyn Snapshotter) {
        let mut parent = String::new();
        for i in 0..LAYERS {
            let chain = format!("chain-{i}");
            if sn.stat(&chain).is_ok() {
                parent = chain;
                continue;
            }
            let key = unpack_key(&testsuite::unique("k"), &chain);
            let opts = Opts::new().with_label(berth_snapshot::LABEL_SNAPSHOT_REF, &chain);
            sn.prepare(&key, &parent, &opts).unwrap();
            let wd = sn.writable_dir(&key).unwrap().unwrap();
            fs::write(wd.path.join(format!("layer-{i}")), chain.as_bytes()).unwrap();
            match sn.commit(&chain, &key, &opts) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => sn.remove(&key).unwrap(),
                Err(e) => panic!("commit {chain}: {e}"),
            }
            parent = chain;
        }
    }

    #[test]
    fn child_worker() {
        // Only does something when spawned by `two_processes_unpack_one_chain`.
        let (Some(root), Some(backend)) =
            (std::env::var_os(CHILD_ENV), std::env::var(BACKEND_ENV).ok())
        else {
            return;
        };
        let sn = open(&backend, Path::new(&root));
        unpack_chain(sn.as_ref());
    }

    /// Removes a test root on drop, even when the test fails.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for m in testsuite::mounts_under(&self.0) {
                let _ = berth_snapshot::unmount_all(&m);
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn run_two(backend: &str) {
        let root: PathBuf = std::env::temp_dir().join(testsuite::unique("berth-snapshot-mp"));
        let _cleanup = Cleanup(root.clone());
        // Create the root first so both children open an initialised store.
        drop(open(backend, &root));
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "tests::child_worker",
                        "--test-threads=1",
                        "--nocapture",
                    ])
                    .env(CHILD_ENV, &root)
                    .env(BACKEND_ENV, backend)
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "child process failed");
        }
        let sn = open(backend, &root);
        let mut infos = Vec::new();
        sn.walk(&[], &mut |i| {
            infos.push(i.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(infos.len(), LAYERS, "{infos:?}");
        for i in 0..LAYERS {
            let st = sn.stat(&format!("chain-{i}")).unwrap();
            assert_eq!(st.kind, Kind::Committed);
            let want = if i == 0 {
                String::new()
            } else {
                format!("chain-{}", i - 1)
            };
            assert_eq!(st.parent, want);
        }
        sn.cleanup().unwrap();
        let dirs = fs::read_dir(root.join("snapshots")).unwrap().count();
        assert_eq!(dirs, LAYERS, "one directory per committed layer");
        // The top of the chain reads back every layer.
        let mounts = sn
            .view("check", &format!("chain-{}", LAYERS - 1), &Opts::new())
            .unwrap();
        let tm = berth_snapshot::TempMount::new(&mounts, &root).unwrap();
        for i in 0..LAYERS {
            let got = fs::read_to_string(tm.path().join(format!("layer-{i}"))).unwrap();
            assert_eq!(got, format!("chain-{i}"));
        }
        tm.finish().unwrap();
    }

    #[test]
    fn two_processes_unpack_one_chain_native() {
        if std::env::var_os(CHILD_ENV).is_some()
            || std::env::var_os(CHURN_ENV).is_some()
            || !crate::common::privileged("native")
        {
            return;
        }
        run_two("native");
    }

    #[test]
    fn two_processes_unpack_one_chain_overlay() {
        if std::env::var_os(CHILD_ENV).is_some()
            || std::env::var_os(CHURN_ENV).is_some()
            || !crate::common::privileged("overlay")
        {
            return;
        }
        run_two("overlay");
    }

    #[test]
    fn two_handles_in_one_process_share_a_root() {
        if !crate::common::privileged("native") {
            return;
        }
        let root = std::env::temp_dir().join(testsuite::unique("berth-snapshot-mt"));
        let _cleanup = Cleanup(root.clone());
        let a = NativeSnapshotter::new(&root).unwrap();
        let b = NativeSnapshotter::new(&root).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| unpack_chain(&a));
            s.spawn(|| unpack_chain(&b));
        });
        let mut n = 0;
        a.walk(&["kind==committed"], &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, LAYERS);
    }

    const CHURN_ENV: &str = "BERTH_SNAPSHOT_MP_CHURN";

    #[test]
    fn churn_worker() {
        // Only does something when spawned by `killed_writers_leave_a_consistent_root`: loops
        // over prepare/write/commit/view/remove until killed (or 30 s pass).
        let (Some(root), Ok(backend)) = (std::env::var_os(CHURN_ENV), std::env::var(BACKEND_ENV))
        else {
            return;
        };
        let sn = open(&backend, Path::new(&root));
        let start = std::time::Instant::now();
        let mut prev: Option<String> = None;
        let mut i = 0u64;
        while start.elapsed() < std::time::Duration::from_secs(30) {
            let key = testsuite::unique("churn-a");
            let name = testsuite::unique("churn-c");
            sn.prepare(&key, "base", &Opts::new()).unwrap();
            let wd = sn.writable_dir(&key).unwrap().unwrap();
            for f in 0..20 {
                fs::write(wd.path.join(format!("f{f}")), vec![b'x'; 1024]).unwrap();
            }
            sn.commit(&name, &key, &Opts::new()).unwrap();
            let view = testsuite::unique("churn-v");
            sn.view(&view, &name, &Opts::new()).unwrap();
            sn.remove(&view).unwrap();
            if i % 2 == 1
                && let Some(p) = prev.take()
            {
                sn.remove(&p).unwrap();
            }
            prev = Some(name);
            i += 1;
        }
    }

    fn killed_writers(backend: &str) {
        let root: PathBuf = std::env::temp_dir().join(testsuite::unique("berth-snapshot-kill"));
        let _cleanup = Cleanup(root.clone());
        {
            let sn = open(backend, &root);
            sn.prepare("base-a", "", &Opts::new()).unwrap();
            sn.commit("base", "base-a", &Opts::new()).unwrap();
        }
        let exe = std::env::current_exe().unwrap();
        let mut max_records = 0;
        for round in 0..4 {
            let mut child = Command::new(&exe)
                .args(["--exact", "tests::churn_worker", "--test-threads=1"])
                .env(CHURN_ENV, &root)
                .env(BACKEND_ENV, backend)
                .spawn()
                .unwrap();
            let ms = 300 + rand::random::<u64>() % 900;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            child.kill().unwrap(); // SIGKILL: no destructor runs, like a crash
            child.wait().unwrap();

            let problems = match backend {
                "overlay" => OverlaySnapshotter::new(&root).unwrap().verify().unwrap(),
                _ => NativeSnapshotter::new(&root).unwrap().verify().unwrap(),
            };
            assert!(problems.is_empty(), "round {round}: {problems:?}");
            let sn = open(backend, &root);
            sn.cleanup().unwrap();
            let mut records = 0;
            sn.walk(&[], &mut |_| {
                records += 1;
                Ok(())
            })
            .unwrap();
            let dirs: Vec<String> = fs::read_dir(root.join("snapshots"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                dirs.iter().all(|d| d.parse::<u64>().is_ok()),
                "round {round}: leftovers after cleanup: {dirs:?}"
            );
            assert_eq!(dirs.len(), records, "round {round}: {dirs:?}");
            max_records = max_records.max(records);
            // The store still works after the crash.
            sn.prepare("after", "base", &Opts::new()).unwrap();
            sn.remove("after").unwrap();
        }
        assert!(
            max_records > 1,
            "the killed writers never committed anything"
        );
    }

    #[test]
    fn killed_writers_leave_a_consistent_root_native() {
        if std::env::var_os(CHURN_ENV).is_some() || !crate::common::privileged("native") {
            return;
        }
        killed_writers("native");
    }

    #[test]
    fn killed_writers_leave_a_consistent_root_overlay() {
        if std::env::var_os(CHURN_ENV).is_some() || !crate::common::privileged("overlay") {
            return;
        }
        killed_writers("overlay");
    }
}
