//! Writing images: layer tarballs from directories, configs, manifests, into an OCI layout
//! directory or straight into a content store.

pub mod layer;

pub use layer::{LayerBuilder, LayerInfo};
