//! Shared helpers of the `berth` container and metrics tests: the built example binaries,
//! prerequisites that skip outside CI and fail under it, and a [`Env`] — a unique store root
//! and runtime state root holding a busybox image built with the image crate's builder from
//! the host's `/bin/busybox` — whose drop removes every container (`berth rm -f`), unmounts
//! anything left under the root and deletes it, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth::image::build::{ImageBuilder, LayerBuilder, write_layer_to_store};
use berth::image::content::ContentStore;
use berth::oci::Compression;

/// The image every test runs.
pub const IMAGE: &str = "berth-test/busybox:latest";

/// Whether we run under CI (then a missing privilege or tool is a failure).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Reports a missing prerequisite: panics under CI, otherwise prints why the test is skipped.
pub fn unavailable(reason: &str) -> bool {
    if in_ci() {
        panic!("required for this test under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// Root (namespaces, mounts, cgroups) and the host's static busybox.
pub fn prerequisites() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("running as root");
    }
    if !Path::new("/bin/busybox").is_file() {
        return unavailable("/bin/busybox (apt-get install busybox-static)");
    }
    true
}

/// A program on PATH.
pub fn have_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    found || unavailable(&format!("`{name}` on PATH"))
}

/// `target/<profile>/examples/<name>`, found from this test binary (`target/<profile>/deps/…`).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run through `cargo test -p berth` (which builds the examples; with \
         `--test NAME` alone it does not: `cargo build --examples` first)",
        bin.display()
    );
    bin
}

const APPLETS: &[&str] = &[
    "sh", "echo", "true", "cat", "ls", "env", "id", "sleep", "mkdir", "pwd", "tty", "test", "[",
    "ps", "kill", "hostname", "ip", "ping",
];

/// Builds the busybox image into the store at `<root>/content` (an uncompressed layer, to keep
/// debug builds fast), with a user `app` (1000) in the supplementary group `wheel` (10), and
/// image defaults the tests check (Env, WorkingDir, Cmd).
pub fn build_image(root: &Path, scratch: &Path) {
    let rootfs = scratch.join("image-rootfs");
    for d in ["bin", "etc", "tmp", "root", "home/app", "srv"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    let store = ContentStore::open(&root.join("content")).unwrap();
    let layer = write_layer_to_store(
        &store,
        &LayerBuilder::new(Compression::None).owner(0, 0),
        &rootfs,
        None,
    )
    .unwrap();
    ImageBuilder::new()
        .cmd(["sh", "-c", "echo default-cmd"])
        .env("PATH=/bin")
        .env("GREETING=from-image")
        .working_dir("/srv")
        .layer(layer, "busybox for the berth tests")
        .finish()
        .unwrap()
        .write_to_store(&store, IMAGE)
        .unwrap();
    std::fs::remove_dir_all(&rootfs).unwrap();
}

/// A store root with the test image, a runtime state root, and cleanup on drop.
pub struct Env {
    dir: Option<tempfile::TempDir>,
    /// The `--root` of berth.
    pub root: PathBuf,
    /// The `--runtime-root`.
    pub state: PathBuf,
    bin: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Env {
    /// A fresh environment (`tag` names it in the temp dir's name).
    pub fn new(tag: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "berth-{tag}-{}-{}-",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        build_image(&root, dir.path());
        Env {
            root,
            state,
            bin: example_bin("berth"),
            dir: Some(dir),
        }
    }

    /// A `berth --root ROOT` command.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    /// `berth run --runtime-root STATE ARGS…` (options go before the image in `args`).
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .arg("--runtime-root")
            .arg(&self.state)
            .args(args);
        c
    }

    /// Runs `berth ARGS…` (stdin closed) and returns its output.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `berth run …` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `berth ARGS…`, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth run -d …`: the new container's id.
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut all = vec!["-d"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "berth run {all:?} failed: {}",
            describe(&out)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(id.len(), 32, "unexpected id {id:?}");
        id
    }

    /// The runtime status of a container as `berth ps` shows it.
    pub fn status(&self, id: &str) -> Option<String> {
        let ps = self.ok(&["ps"]);
        ps.lines().find(|l| l.starts_with(&id[..12])).map(|l| {
            ["running", "stopped", "created", "paused"]
                .into_iter()
                .find(|s| l.contains(s))
                .unwrap_or("other")
                .to_owned()
        })
    }

    /// Waits up to 10 s for `cond`.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The keys of berth's container records in the store's metadata database
    /// (`container/<id>`, `name/<name>`).
    pub fn record_keys(&self) -> Vec<String> {
        let store = ContentStore::open(&self.root.join("content")).unwrap();
        store
            .records("berth.containers")
            .unwrap()
            .list("")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Asserts that container `id` left nothing: record, directory, state, cgroup, mount.
    pub fn assert_gone(&self, id: &str) {
        assert!(
            !self.root.join("containers").join(id).exists(),
            "directory of {id} left"
        );
        let keys = self.record_keys();
        assert!(
            !keys.contains(&format!("container/{id}")),
            "record of {id} left: {keys:?}"
        );
        assert!(!self.state.join(id).exists(), "runtime state of {id} left");
        assert!(
            !Path::new("/sys/fs/cgroup/memory/berth").join(id).exists()
                && !Path::new("/sys/fs/cgroup/berth").join(id).exists(),
            "cgroup of {id} left"
        );
        assert!(
            mounts_under(&self.root).is_empty(),
            "mounts left under the root"
        );
    }
}

/// Mount points under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

impl Drop for Env {
    fn drop(&mut self) {
        // A container whose processes are still exiting may refuse removal once: retry.
        for attempt in 0..3 {
            let Ok(out) = self.cmd().args(["ps", "-q"]).stdin(Stdio::null()).output() else {
                break;
            };
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            if ids.trim().is_empty() {
                break;
            }
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            for id in ids.lines() {
                let _ = self
                    .cmd()
                    .args(["rm", "-f", id])
                    .stdin(Stdio::null())
                    .output();
            }
        }
        if let Some(dir) = self.dir.take() {
            for m in mounts_under(dir.path()) {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = dir.close();
        }
    }
}

/// The output as text for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Records `berth-test/volume:latest`: the test image whose config also declares the volume
/// `/vol` (the image builder has no Volumes setting, so the config is edited as JSON).
pub fn add_volume_image(root: &Path) -> &'static str {
    use berth::image::metadata::{Descriptor, Image};
    use berth::oci::Digest;
    let store = ContentStore::open(&root.join("content")).unwrap();
    let base = store.images().get(&format!("docker.io/{IMAGE}")).unwrap();
    let put = |bytes: &[u8]| {
        let digest = Digest::sha256(bytes);
        let none = std::collections::BTreeMap::new();
        store
            .ingest(
                &format!("test-{digest}"),
                bytes,
                &digest,
                Some(bytes.len() as u64),
                &none,
                &mut |_, _| {},
            )
            .unwrap();
        digest
    };
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.read_all(&base.target.digest, 1 << 20).unwrap()).unwrap();
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&store.read_all(&config_digest, 1 << 20).unwrap()).unwrap();
    config["config"]["Volumes"] = serde_json::json!({ "/vol": {} });
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = serde_json::json!(put(&config).to_string());
    manifest["config"]["size"] = serde_json::json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = put(&manifest);
    let target = Descriptor::new(
        base.target.media_type.clone(),
        digest,
        manifest.len() as u64,
    );
    store
        .images()
        .put(Image::new("docker.io/berth-test/volume:latest", target))
        .unwrap();
    "berth-test/volume:latest"
}
