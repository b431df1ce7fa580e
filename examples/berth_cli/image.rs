//! `berth image …`: import, list, tag, remove and export images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::export::{self, ExportFormat};
use berth::image::import::{self, ImportOptions, Platform, PlatformChoice};
use berth::image::metadata::{Descriptor, Image};
use berth::oci::manifest::{self, Document};
use berth::oci::media_type::{MediaKind, kind_of};
use clap::Subcommand;

use crate::progress::Bars;

/// Image commands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory, an oci-archive or a docker-archive.
    Import {
        /// The directory or archive.
        path: PathBuf,
        /// Name the image (the source must hold exactly one).
        #[arg(long)]
        name: Option<String>,
        /// Import this platform (os/arch[/variant]) instead of the host's.
        #[arg(long, conflicts_with = "all_platforms")]
        platform: Option<String>,
        /// Import every platform of multi-platform images.
        #[arg(long)]
        all_platforms: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove an image name, then collect the content nothing else uses.
    Rm {
        /// The image name(s).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image another name.
    Tag {
        /// The existing name.
        source: String,
        /// The new name.
        target: String,
    },
    /// Export an image to an OCI layout directory or an oci-archive.
    Export {
        /// The image name.
        name: String,
        /// The directory or archive to write.
        dest: PathBuf,
        /// `oci-dir` or `oci-archive`.
        #[arg(long, default_value = "oci-dir")]
        format: String,
    },
}

/// Total size of what `target` references, as stored, and the platforms it covers.
fn summarize(store: &ContentStore, target: &Descriptor) -> (u64, Vec<String>) {
    let mut size = 0;
    let mut platforms = Vec::new();
    let mut stack = vec![target.clone()];
    while let Some(d) = stack.pop() {
        size += d.size;
        if let Some(p) = &d.platform {
            platforms.push(Platform::from(p).to_string());
        }
        if !matches!(
            kind_of(&d.media_type),
            MediaKind::Index | MediaKind::Manifest
        ) {
            continue;
        }
        let Ok(bytes) = store.read_all(&d.digest, berth::oci::MAX_DOCUMENT_SIZE) else {
            continue;
        };
        match manifest::parse_document(&bytes, "image") {
            Ok(Document::Index(i)) => stack.extend(
                i.value
                    .manifests()
                    .iter()
                    .filter_map(|c| Descriptor::try_from(c).ok())
                    .filter(|c| store.exists(&c.digest)),
            ),
            Ok(Document::Manifest(m)) => {
                size += m.value.config().size();
                size += m.value.layers().iter().map(|l| l.size()).sum::<u64>();
            }
            Err(_) => {}
        }
    }
    platforms.sort();
    platforms.dedup();
    (size, platforms)
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Runs an image command.
pub fn run(store: &ContentStore, root: &Path, cmd: &ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Import {
            path,
            name,
            platform,
            all_platforms,
            quiet,
        } => {
            let choice = match (platform, all_platforms) {
                (_, true) => PlatformChoice::All,
                (Some(p), false) => PlatformChoice::Only(Platform::parse(p)?),
                (None, false) => PlatformChoice::Host,
            };
            let bars = Bars::new(*quiet);
            let started = std::time::Instant::now();
            let report = import::import(
                store,
                path,
                &ImportOptions {
                    name: name.as_deref(),
                    platform: choice,
                    progress: &bars,
                },
            )
            .with_context(|| format!("importing {}", path.display()))?;
            for img in &report.images {
                println!("imported {} {}", img.name, img.target.digest);
            }
            if !quiet {
                eprintln!(
                    "{:?}: {} blobs, {} in {:.2?}",
                    report.format,
                    report.blobs,
                    human(report.bytes),
                    started.elapsed()
                );
            }
            Ok(())
        }
        ImageCommand::Ls => {
            let mut images = store.images().list(&[])?;
            images.sort_by(|a, b| a.name.cmp(&b.name));
            println!(
                "{:<50}  {:<9}  {:<19}  {:>10}  PLATFORMS",
                "NAME", "TYPE", "DIGEST", "SIZE"
            );
            for img in images {
                let kind = match kind_of(&img.target.media_type) {
                    MediaKind::Index => "index",
                    MediaKind::Manifest => "manifest",
                    _ => "other",
                };
                let (size, platforms) = summarize(store, &img.target);
                let digest = img.target.digest.to_string();
                println!(
                    "{:<50}  {:<9}  {:<19}  {:>10}  {}",
                    img.name,
                    kind,
                    &digest[..digest.len().min(19)],
                    human(size),
                    platforms.join(",")
                );
            }
            Ok(())
        }
        ImageCommand::Rm { names } => {
            let images = store.images();
            for name in names {
                let normalized = berth::oci::Reference::parse(name)?.to_string();
                images
                    .delete(&normalized)
                    .with_context(|| format!("removing {normalized}"))?;
                println!("untagged {normalized}");
            }
            let report = crate::engine::collect_garbage(root, store)?;
            println!(
                "gc: removed {} snapshots, {} blobs ({})",
                report.snapshots,
                report.blobs,
                human(report.bytes)
            );
            Ok(())
        }
        ImageCommand::Tag { source, target } => {
            let images = store.images();
            let src = berth::oci::Reference::parse(source)?.to_string();
            let dst = berth::oci::Reference::parse(target)?.to_string();
            let image = images.get(&src).with_context(|| format!("image {src}"))?;
            let mut tagged = Image::new(dst.clone(), image.target);
            tagged.labels = image.labels;
            images.put(tagged)?;
            println!("tagged {src} as {dst}");
            Ok(())
        }
        ImageCommand::Export { name, dest, format } => {
            let format: ExportFormat = format.parse()?;
            if format == ExportFormat::OciArchive && dest.is_dir() {
                bail!(
                    "{} is a directory; an oci-archive is a file",
                    dest.display()
                );
            }
            let bars = Bars::new(false);
            export::export(store, &[name.as_str()], dest, format, &bars)
                .with_context(|| format!("exporting {name}"))?;
            println!("exported {name} to {}", dest.display());
            Ok(())
        }
    }
}
