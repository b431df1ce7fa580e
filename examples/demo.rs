//! The berth demo: a real busybox OCI image built from the host's busybox-static, imported,
//! unpacked and run in a container with memory and pids limits, whose cgroup metrics are then
//! printed — the whole library suite in one command. Every step prints what it did.
//!
//! 1. **rootfs**: a temporary tree with `/bin/busybox` (copied from the host), applet symlinks
//!    (`sh`, `echo`, `true`, `cat`, `ls`, …), `/etc/passwd` and `/etc/group`.
//! 2. **build**: a gzip layer from that tree ([`LayerBuilder`]), a config and a manifest
//!    ([`ImageBuilder`]), written into an OCI layout directory ([`LayoutWriter`]).
//! 3. **import**: that layout into a fresh store as `berth-demo/busybox:latest`, with progress.
//! 4. **list** the store's images; 5. **export** the image to another OCI layout directory.
//! 6. **unpack** it into the overlay snapshotter (a chain of committed snapshots).
//! 7. **run** `echo hello from berth` in a container limited to 64 MiB and 32 processes: an
//!    active snapshot on the image's chain mounted as the bundle's rootfs, a runtime spec from
//!    the image config, created and started with berth-runtime, its stdout read from a pipe.
//! 8. **metrics** of that container's cgroup (memory limit, pids, cpu) with berth-metrics.
//! 9. **clean up**: runtime state and cgroup, mount, snapshot.
//!
//! Steps 7–9 share their code with `berth run` (`berth_cli/engine.rs`). Everything lives in
//! one temporary directory, removed at the end; the container is removed by a guard, so also
//! on failure. Needs root (namespaces, cgroups, overlay mounts).
//! `BUSYBOX=/path/to/busybox` picks another static busybox binary.

#[path = "berth_cli/engine.rs"]
mod engine;
#[path = "berth_cli/progress.rs"]
mod progress;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth::image::build::{ImageBuilder, LayerBuilder, write_layer_to_layout};
use berth::image::content::ContentStore;
use berth::image::export::{self, ExportFormat, LayoutWriter};
use berth::image::import::{self, ImportOptions};
use berth::image::progress::ProgressEvent;
use berth::metrics::{Hierarchy, Metrics, is_unlimited, read_metrics};
use berth::oci::Compression;
use berth::runtime::{CreateOptions, Runtime, Stdio};
use engine::records::ContainerRecord;
use engine::runspec::{Network, RunOptions};
use progress::Bars;

const IMAGE: &str = "berth-demo/busybox:latest";
const APPLETS: &[&str] = &[
    "sh", "echo", "true", "false", "cat", "ls", "env", "id", "ps", "sleep", "uname", "mkdir",
];

fn step(n: u32, what: &str) {
    println!("\n[{n}] {what}");
}

/// Builds the root file system of the image under `rootfs`.
fn make_rootfs(rootfs: &Path, busybox: &Path) -> Result<()> {
    let bin = rootfs.join("bin");
    let etc = rootfs.join("etc");
    for d in [&bin, &etc, &rootfs.join("tmp"), &rootfs.join("root")] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    std::fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    println!(
        "    rootfs {}: /bin/busybox + {} applets, /etc/passwd, /etc/group",
        rootfs.display(),
        APPLETS.len()
    );
    Ok(())
}

fn find_busybox() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BUSYBOX") {
        return Ok(PathBuf::from(p));
    }
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no busybox binary found: install busybox-static (apt-get install busybox-static)")
}

fn run(work: &Path) -> Result<()> {
    let busybox = find_busybox()?;
    step(1, "rootfs from the host's busybox-static");
    let rootfs = work.join("rootfs");
    make_rootfs(&rootfs, &busybox)?;

    step(2, "build the image with the writer API");
    let started = Instant::now();
    let layout_dir = work.join("built-layout");
    let mut layout = LayoutWriter::open(&layout_dir)?;
    let layer = write_layer_to_layout(
        &mut layout,
        &LayerBuilder::new(Compression::Gzip).owner(0, 0),
        &rootfs,
    )?;
    println!(
        "    layer  {} ({} bytes gzip, {} bytes tar)\n    diffID {}",
        layer.digest, layer.size, layer.uncompressed_size, layer.diff_id
    );
    let built = ImageBuilder::new()
        .cmd(["/bin/sh"])
        .env("PATH=/bin")
        .working_dir("/")
        .label("org.opencontainers.image.title", "berth demo busybox")
        .layer(layer, "berth demo: busybox-static with applet links")
        .finish()?;
    built.write_to_layout(&mut layout, IMAGE)?;
    layout.finish()?;
    println!(
        "    config {}\n    manifest {} -> {} in {:.1?}",
        built.config_digest,
        built.descriptor.digest,
        layout_dir.display(),
        started.elapsed()
    );

    step(
        3,
        &format!("import {} into a fresh store", layout_dir.display()),
    );
    let store = ContentStore::open(&work.join("root/content"))?;
    let progress = |e: &ProgressEvent<'_>| {
        if e.finished {
            println!("    {:<8} {} {} bytes", e.kind, e.item, e.done);
        }
    };
    let bars = Bars::new(!std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let started = Instant::now();
    let report = import::import(
        &store,
        &layout_dir,
        &ImportOptions {
            progress: &bars,
            ..Default::default()
        },
    )?;
    for img in &report.images {
        println!("    imported {} -> {}", img.name, img.target.digest);
    }
    println!(
        "    {} blobs, {} bytes in {:.1?}",
        report.blobs,
        report.bytes,
        started.elapsed()
    );

    step(4, "list images");
    for img in store.images().list(&[])? {
        let platform = img
            .target
            .platform
            .as_ref()
            .map(|p| berth::oci::Platform::from(p).to_string())
            .unwrap_or_default();
        println!("    {}  {}  {}", img.name, img.target.digest, platform);
    }

    step(5, "export to an OCI layout directory");
    let out = work.join("exported");
    let name = report.images[0].name.clone();
    export::export(
        &store,
        &[name.as_str()],
        &out,
        ExportFormat::OciDir,
        &progress,
    )?;
    println!(
        "    exported {name} -> {} (try: skopeo inspect oci:DIR:latest)",
        out.display()
    );
    let verify = store.verify()?;
    println!(
        "    content verify: {} blobs, {} bytes, {} corrupt",
        verify.checked,
        verify.bytes,
        verify.corrupt.len()
    );
    if !verify.is_ok() {
        bail!("the store holds corrupt blobs");
    }
    drop(store);
    run_container(work, &name, &bars)
}

/// Removes the demo's container (state, cgroup, mount, snapshot) when dropped.
struct ContainerGuard<'a> {
    root: &'a Path,
    record: Option<ContainerRecord>,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            match engine::remove(self.root, &r, true) {
                Ok(()) => println!(
                    "    removed container {} (state, cgroup, mount, snapshot)",
                    r.id
                ),
                Err(e) => eprintln!("    cleaning up container {}: {e:#}", r.id),
            }
        }
    }
}

/// Steps 6–9.
fn run_container(work: &Path, image: &str, bars: &Bars) -> Result<()> {
    let root = work.join("root");
    let state = work.join("state");
    step(6, &format!("unpack {image} into the overlay snapshotter"));
    let started = Instant::now();
    let store = engine::open_store(&root)?;
    let sn = engine::open_snapshotter(&root, "overlay")?;
    let info = engine::unpack_image(&store, sn.as_ref(), "overlay", image, bars)?;
    println!("    chain {} in {:.1?}", info.chain_id, started.elapsed());
    drop(sn);

    step(
        7,
        "run `echo hello from berth` (memory 64 MiB, pids 32, cpus 0.5)",
    );
    let options = RunOptions {
        cmd: vec!["echo".into(), "hello from berth".into()],
        memory: Some(64 << 20),
        pids_limit: Some(32),
        cpus: Some(0.5),
        network: Some(Network::None),
        ..RunOptions::default()
    };
    let prepared = engine::prepare_quiet(&engine::PrepareRequest {
        root: &root,
        runtime_root: &state,
        image,
        snapshotter: "overlay",
        name: Some("demo"),
        options: &options,
        detached: false,
        ephemeral: true,
        sn: None,
    })?;
    let _guard = ContainerGuard {
        root: &root,
        record: Some(prepared.record.clone()),
    };
    let id = prepared.record.id.clone();
    println!(
        "    container {id}: snapshot on {}, rootfs {}",
        prepared.record.chain_id,
        prepared.bundle.join("rootfs").display()
    );
    let rt = Runtime::new(&state)?;
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let init = rt.create(
        &id,
        &prepared.bundle,
        CreateOptions {
            stdin: Stdio::Null,
            stdout: Stdio::Fd(writer),
            ..CreateOptions::default()
        },
    )?;
    let st = rt.state(&id)?;
    println!(
        "    created: init pid {}, cgroup {}",
        init.pid(),
        st.cgroup_path
    );
    engine::loopback_up(init.pid())?;
    rt.start(&id)?;
    let mut output = String::new();
    std::fs::File::from(reader).read_to_string(&mut output)?;
    let status = init.wait()?;
    for line in output.lines() {
        println!("    container says: {line}");
    }
    println!("    exited with status {}", status.code());
    if status.code() != 0 {
        bail!("the container failed with status {}", status.code());
    }

    step(8, "metrics of the container's cgroup");
    let paths = Hierarchy::detect()?.paths_for(&st.cgroup_path)?;
    let metrics = read_metrics(&paths)?;
    print_metrics(&metrics);

    step(9, "clean up the container");
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn print_metrics(m: &Metrics) {
    let limit = |l: Option<u64>| match l {
        Some(v) if !is_unlimited(v) => mib(v),
        _ => "unlimited".to_owned(),
    };
    match m {
        Metrics::V1(v) => {
            let mem = v.memory.as_ref().and_then(|m| m.usage.as_ref());
            println!("    cgroup v1 (this host's layout)");
            println!("    memory limit      {}", limit(mem.and_then(|u| u.limit)));
            println!(
                "    memory max usage  {}",
                mem.and_then(|u| u.max).map_or("-".into(), mib)
            );
            if let Some(p) = &v.pids {
                println!(
                    "    pids              {} (limit {})",
                    p.current,
                    p.limit.map_or("unlimited".into(), |l| l.to_string())
                );
            }
            if let Some(u) = v.cpu.as_ref().and_then(|c| c.usage.as_ref()) {
                println!("    cpu usage         {:.6} s", u.total as f64 / 1e9);
            }
        }
        Metrics::V2(v) => {
            let mem = v.memory.as_ref();
            println!("    cgroup v2");
            println!(
                "    memory limit      {}",
                limit(mem.and_then(|m| m.usage_limit))
            );
            println!(
                "    memory max usage  {}",
                mem.and_then(|m| m.max_usage).map_or("-".into(), mib)
            );
            if let Some(p) = &v.pids {
                println!(
                    "    pids              {} (limit {})",
                    p.current,
                    p.limit.map_or("unlimited".into(), |l| l.to_string())
                );
            }
            if let Some(c) = &v.cpu {
                println!("    cpu usage         {:.6} s", c.usage_usec as f64 / 1e6);
            }
        }
    }
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo runs a container: run it as root (namespaces, cgroups, overlay mounts)");
    }
    let work = tempfile::Builder::new()
        .prefix("berth-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    println!("berth demo in {}", work.path().display());
    let result = run(work.path());
    let path = work.path().to_path_buf();
    work.close()
        .with_context(|| format!("removing {}", path.display()))?;
    println!("\ncleaned up {}", path.display());
    result
}
