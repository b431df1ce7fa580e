//! berth-runtime: an OCI runtime as a library.
//!
//! A [`Runtime`] takes an OCI bundle (`config.json` + root filesystem) and
//! runs it as the runtime-spec says: [`Runtime::create`] builds namespaces,
//! cgroup and root filesystem and leaves the container's init waiting;
//! [`Runtime::start`] execs the user program; [`Runtime::state`],
//! [`Runtime::kill`], [`Runtime::exec`], [`Runtime::pause`],
//! [`Runtime::resume`], [`Runtime::update`], [`Runtime::pids`] and
//! [`Runtime::delete`] complete the lifecycle. State lives in a directory
//! per container under the root (default [`state::DEFAULT_ROOT`]), so each
//! step can be a separate process (a runc-style CLI).
//!
//! # Example
//! ```no_run
//! use berth_runtime::{CreateOptions, Runtime, Stdio};
//! # fn main() -> berth_runtime::Result<()> {
//! let rt = Runtime::new(berth_runtime::state::DEFAULT_ROOT)?;
//! // bundle/config.json + bundle/rootfs, e.g. from `runc spec`.
//! let init = rt.create("web", "bundle".as_ref(), CreateOptions {
//!     stdin: Stdio::Null,
//!     ..Default::default()
//! })?;
//! rt.start("web")?; // the user program is now exec'd
//! println!("{}", serde_json::to_string(&rt.state("web")?.to_oci()).unwrap_or_default());
//! let status = init.wait()?; // only the creating process can wait
//! rt.delete("web", false)?;
//! # let _ = status; Ok(()) }
//! ```
//!
//! # Design
//! - **Spawn path**: the runtime clones a
//!   stage-1 child, which joins/creates namespaces and clones the container
//!   process with `CLONE_PARENT`, so the caller can wait for it. Everything
//!   the children need is prepared before the first clone; between clone
//!   and exec they make only system calls (no allocation, no locks), and
//!   report failures as typed records naming the step and item.
//! - **Security** (see `shared/design/security.md`): every fd is
//!   close-on-exec and the children close all fds they were not given;
//!   mount targets are resolved as fds inside the rootfs (`openat2`
//!   `RESOLVE_IN_ROOT`) and mounted through `/proc/self/fd`; `/proc` and
//!   `/sys` must be real mounts on real directories; the cwd is verified
//!   after `pivot_root`; setup runs non-dumpable; [`seal::seal_self_exe`]
//!   serves front ends that re-exec themselves.
//! - **Cgroups**: cgroups-rs, v1/v2; hybrid hosts are driven as v1, and the
//!   container also gets a directory in the hybrid cgroup2 tree (its
//!   processes, PSI). Device access is denied but for the default devices
//!   plus the spec's rules: through the v1 devices controller (v1, hybrid)
//!   and through an eBPF device program compiled by
//!   [`cgroups::device_filter`] and attached to the cgroup2 directory
//!   (v2, and hybrid as well, where the kernel checks both).
//! - **Hooks**: createRuntime, prestart and createContainer run in the
//!   runtime while init waits before `pivot_root`; startContainer runs in
//!   the container (by init, after `start`); poststart and poststop run in
//!   the runtime; each gets the OCI state on stdin and honours `timeout`.
//!
//! # Front-end obligations
//! A front end that re-executes its own binary must call
//! [`seal::seal_self_exe`] first in `main` (CVE-2019-5736). The process
//! that calls `create` is the parent of the container's init: it should
//! wait for it ([`ContainerProcess::wait`]) or exit so that init is
//! reparented.

mod capabilities;
pub mod cgroups;
pub mod console;
mod container;
mod error;
mod hooks;
mod hooks_exec;
mod namespaces;
pub mod preflight;
mod process;
mod rlimits;
mod rootfs;
pub mod seal;
mod seccomp;
mod spawn;
pub mod state;
mod stdio;
mod sync;
mod sys;

pub use oci_spec;

pub use cgroups::CgroupPaths;
pub use container::{Runtime, load_spec};
pub use error::{Error, ErrorKind, Result, Step};
pub use process::DEFAULT_PATH;
pub use state::{ContainerState, OciState, Status, cgroup_paths, read_state};
pub use stdio::{ContainerProcess, CreateOptions, ExecOptions, ExitStatus, Stdio};
