//! # berth
//!
//! The building blocks a container engine is made of, as independent crates that any front end can
//! embed. This facade re-exports them under short names:
//!
//! | module | crate | what it is |
//! | --- | --- | --- |
//! | [`oci`] | `berth-oci` | digests, descriptors, media types, platforms, references, spec validation |
//! | [`image`] | `berth-image` | content store, import/export, layer apply, unpack |
//! | [`snapshot`] | `berth-snapshot` | snapshotters (overlay, native) with containerd's semantics |
//! | [`runtime`] | `berth-runtime` | an OCI runtime: namespaces, rootfs, cgroups, capabilities, seccomp |
//! | [`metrics`] | `berth-metrics` | cgroup v1/v2 statistics and Prometheus exposition |
//!
//! The crates meet only through their public APIs: `image`'s unpack drives any
//! [`snapshot::Snapshotter`], `runtime` takes a bundle directory, `metrics` reads cgroups.

pub use berth_image as image;
pub use berth_metrics as metrics;
pub use berth_oci as oci;
pub use berth_runtime as runtime;
pub use berth_snapshot as snapshot;
