//! `berth layer apply FILE DIR`: one layer blob (gzip, zstd or plain) onto a plain directory,
//! with OCI whiteout semantics, like `umoci raw unpack` does for one layer. A rejected layer
//! (escape attempt, invalid whiteout, corrupt stream) exits non-zero with its error.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth::image::apply::{ApplyOptions, apply_layer_file};
use berth::oci::Digest;
use clap::Subcommand;

/// Layer commands.
#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Apply one layer blob onto a directory (created if missing).
    Apply {
        /// The layer blob: a tar, gzip or zstd compressed or not.
        file: PathBuf,
        /// The directory to apply onto.
        dir: PathBuf,
        /// Fail unless the uncompressed stream has this digest (the layer's diffID).
        #[arg(long)]
        diff_id: Option<String>,
        /// Keep the files owned by the caller (like `tar --no-same-owner`).
        #[arg(long)]
        no_same_owner: bool,
    },
}

/// Runs a layer command.
pub fn run(cmd: &LayerCommand) -> Result<()> {
    match cmd {
        LayerCommand::Apply {
            file,
            dir,
            diff_id,
            no_same_owner,
        } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut opts = ApplyOptions::default().with_no_same_owner(*no_same_owner);
            if let Some(d) = diff_id {
                let d: Digest = d.parse().with_context(|| format!("--diff-id {d}"))?;
                opts = opts.with_expected_diff_id(d);
            }
            let stats = apply_layer_file(file, dir, opts)
                .with_context(|| format!("applying {} onto {}", file.display(), dir.display()))?;
            println!(
                "applied {} ({:?}, {} entries, {} bytes uncompressed) diffID {}",
                file.display(),
                stats.compression,
                stats.entries,
                stats.uncompressed_size,
                stats.diff_id
            );
            Ok(())
        }
    }
}
