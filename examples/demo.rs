//! The berth demo: a real busybox OCI image built from the host's busybox-static, then
//! imported, listed and exported with the berth crates. Every step prints what it did.
//!
//! 1. **rootfs**: a temporary tree with `/bin/busybox` (copied from the host), applet symlinks
//!    (`sh`, `echo`, `true`, `cat`, `ls`, …), `/etc/passwd` and `/etc/group`.
//! 2. **build**: a gzip layer from that tree ([`LayerBuilder`]), a config and a manifest
//!    ([`ImageBuilder`]), written into an OCI layout directory ([`LayoutWriter`]).
//! 3. **import**: that layout into a fresh store as `berth-demo/busybox:latest`, with progress.
//! 4. **list** the store's images; 5. **export** the image to another OCI layout directory.
//!
//! Everything lives in one temporary directory, removed at the end (also on failure).
//! `BUSYBOX=/path/to/busybox` picks another static busybox binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth::image::build::{ImageBuilder, LayerBuilder, write_layer_to_layout};
use berth::image::content::ContentStore;
use berth::image::export::{self, ExportFormat, LayoutWriter};
use berth::image::import::{self, ImportOptions};
use berth::image::progress::ProgressEvent;
use berth::oci::Compression;

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
    let started = Instant::now();
    let report = import::import(
        &store,
        &layout_dir,
        &ImportOptions {
            progress: &progress,
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
    Ok(())
}

fn main() -> Result<()> {
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
