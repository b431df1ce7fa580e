//! `berth content …`: list, garbage-collect and verify the blobs of the store.

use anyhow::{Result, bail};
use berth::image::content::{ContentStore, GcOptions};
use clap::Subcommand;

/// Content store commands.
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List every blob: digest, size and labels.
    Ls,
    /// Remove blobs no image, lease or gc.root label reaches, and stale ingests.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every blob and report those whose bytes do not match their name.
    Verify,
}

/// Runs a content command.
pub fn run(store: &ContentStore, cmd: &ContentCommand) -> Result<()> {
    match cmd {
        ContentCommand::Ls => {
            println!("{:<71}  {:>12}  LABELS", "DIGEST", "SIZE");
            store.walk(&[], |info| {
                let labels: Vec<String> = info
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<71}  {:>12}  {}",
                    info.digest,
                    info.size,
                    labels.join(",")
                );
                Ok(())
            })?;
            Ok(())
        }
        ContentCommand::Gc { dry_run } => {
            let report = store.gc(&GcOptions {
                dry_run: *dry_run,
                ..GcOptions::default()
            })?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            for d in &report.removed_blobs {
                println!("{verb} {d}");
            }
            println!(
                "gc: {verb} {} blobs ({} bytes), {} stale ingests, {} expired leases; kept {} blobs",
                report.removed_blobs.len(),
                report.removed_bytes,
                report.removed_ingests.len(),
                report.expired_leases.len(),
                report.kept_blobs
            );
            Ok(())
        }
        ContentCommand::Verify => {
            let report = store.verify()?;
            for c in &report.corrupt {
                println!("CORRUPT {} ({})", c.digest, c.reason);
            }
            println!(
                "verify: {} blobs, {} bytes checked, {} corrupt",
                report.checked,
                report.bytes,
                report.corrupt.len()
            );
            if !report.is_ok() {
                bail!("{} corrupt blobs", report.corrupt.len());
            }
            Ok(())
        }
    }
}
