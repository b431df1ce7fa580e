//! # berth-oci
//!
//! The vocabulary of the OCI image and runtime specifications that every other berth crate
//! shares, with no I/O of its own: [`Digest`]s and their verification, descriptors and media
//! types, platforms, image references, layer chain IDs, and validation of runtime specs.
//! The `oci-spec` crate's types are used at the boundaries and re-exported as [`spec`].

pub mod chain_id;
pub mod digest;
pub mod docker_archive;
pub mod error;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod validate;

pub use chain_id::{chain_id, chain_ids};
pub use digest::{Algorithm, Digest, Digester, VerifyingReader, verification_error};
pub use docker_archive::DockerArchiveEntry;
pub use error::{Error, ErrorKind, Result};
pub use manifest::{
    Descriptor, Document, Format, ImageConfiguration, ImageIndex, ImageManifest, MAX_DOCUMENT_SIZE,
    Parsed,
};
pub use media_type::{Compression, MediaKind};
pub use platform::{Matcher, Platform};
pub use reference::Reference;
pub use validate::{validate, validate_json};

/// The `oci-spec` crate, re-exported so users name the same version berth uses.
pub use oci_spec as spec;
