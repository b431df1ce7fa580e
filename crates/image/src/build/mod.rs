//! Writing images: layer tarballs from directories ([`LayerBuilder`]), configs and manifests
//! ([`ImageBuilder`]), into an OCI layout directory ([`crate::export::LayoutWriter`]) or
//! straight into a content store with an image record.
//!
//! Typical use: build each layer with [`write_layer_to_layout`] (or [`write_layer_to_store`]),
//! add them to an [`ImageBuilder`] with the runtime defaults, [`ImageBuilder::finish`], then
//! [`BuiltImage::write_to_layout`] (and [`crate::export::LayoutWriter::finish`]) or
//! [`BuiltImage::write_to_store`].

pub mod image;
pub mod layer;

pub use image::{BuiltImage, ImageBuilder, write_layer_to_layout, write_layer_to_store};
pub use layer::{LayerBuilder, LayerInfo};
