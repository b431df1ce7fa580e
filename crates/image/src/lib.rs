//! # berth-image
//!
//! Everything berth does with images: a content-addressed blob store with resumable, verified
//! ingests and garbage collection ([`content`]), its metadata — labels, image records, leases
//! and front ends' own namespaced records ([`metadata::RecordStore`]) — in one embedded
//! database ([`metadata`]), image import/export, layer apply/diff and unpack.

pub mod content;
pub mod error;
pub mod metadata;

pub use error::{Error, ErrorKind, Result};

pub mod apply;
pub mod compression;
pub mod diff;

pub mod build;
pub mod export;
pub mod import;
pub mod progress;
#[cfg(feature = "registry")]
pub mod registry;
pub mod unpack;
