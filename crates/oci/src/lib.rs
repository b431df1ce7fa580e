//! # berth-oci
//!
//! The vocabulary of the OCI image and runtime specifications that every other berth crate
//! shares, with no I/O of its own: [`Digest`]s and their verification, descriptors and media
//! types, platforms, image references, layer chain IDs, and validation of runtime specs.
//! The `oci-spec` crate's types are used at the boundaries and re-exported as [`spec`].
//!
//! | module | what it gives |
//! | --- | --- |
//! | [`digest`] | validated [`Digest`]s, a streaming [`Digester`] whose state can be saved and restored (resumable ingests), a [`VerifyingReader`] |
//! | [`media_type`] | OCI and Docker media types and what each denotes ([`MediaKind`]) |
//! | [`manifest`] | size-capped decoding of manifests, indexes and configs of both families |
//! | [`docker_archive`] | the `manifest.json` of `docker save` archives, with path safety |
//! | [`platform`] | [`Platform`] parsing/normalisation and the containerd-style [`Matcher`] |
//! | [`reference`](mod@reference) | image [`Reference`]s, normalised like Docker (`busybox` → `docker.io/library/busybox:latest`) |
//! | [`chain_id`](mod@chain_id) | diffID → chainID |
//! | [`validate`](mod@validate) | runtime-spec validation listing every problem |
//!
//! Every fallible function returns this crate's [`Error`], whose [`Error::kind`] classifies it
//! in containerd's `errdefs` manner. Bad input never panics.
//!
//! ```
//! use berth_oci::{Algorithm, Digest, Digester, Matcher, Reference};
//!
//! # fn main() -> berth_oci::Result<()> {
//! let name: Reference = "busybox".parse()?;
//! assert_eq!(name.to_string(), "docker.io/library/busybox:latest");
//! assert_eq!(name.familiar(), "busybox:latest");
//!
//! // An arm/v7 host runs armhf images, and prefers v7 to v6.
//! let host = Matcher::only(&"linux/arm/v7".parse()?);
//! assert!(host.matches(&"linux/armhf".parse()?));
//! assert!(host.less(&"linux/arm/v7".parse()?, &"linux/arm/v6".parse()?));
//!
//! // Hashing can stop, be saved, and continue elsewhere without re-reading.
//! let mut digester = Digester::new(Algorithm::Sha256);
//! digester.update(b"hello ");
//! let saved: Vec<u8> = digester.save_state();
//! let mut resumed = Digester::restore_state(Algorithm::Sha256, &saved)?;
//! resumed.update(b"world");
//! assert_eq!(resumed.finalize(), Digest::sha256(b"hello world"));
//! # Ok(())
//! # }
//! ```

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
