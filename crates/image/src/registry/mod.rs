//! Pull and push images from and to OCI distribution registries (feature `registry`).
//!
//! # Why our own client
//! The `oci-client` crate is async (tokio + reqwest) and hands blobs out as whole buffers or as
//! async streams into its own sinks; it neither resumes a partial download with
//! `Range: bytes=OFFSET-` into an existing ingest nor lets the caller verify while writing into
//! a store that owns its hashing state. berth is blocking throughout, and the content store's
//! writers already hash, persist their state and resume at an offset, so a thin blocking client
//! over `ureq` 3 (rustls, no default features: no transparent decompression) is smaller and
//! keeps verification in the store. See `client` for the HTTP side.
//!
//! # Pull ([`pull`])
//! 1. **Resolve**: `GET /v2/<repo>/manifests/<tag|digest>` with the Accept list of OCI
//!    index/manifest and Docker list/manifest; the body is capped at 4 MiB, hashed, and checked
//!    against the reference's digest (or `Docker-Content-Digest`).
//! 2. **Select** as import does ([`PlatformChoice`]): from an index the best matching manifest
//!    becomes the image's target (with [`PlatformChoice::All`] the index and every child).
//! 3. **Store** under a lease: documents from memory; layers streamed from the registry into
//!    the store's writers, up to [`PullOptions::max_concurrent`] at once. A partial ingest left
//!    by an interrupted pull is resumed with `Range: bytes=OFFSET-`; a registry answering 200
//!    instead of 206 restarts the ingest from zero. Digests and sizes are verified by the
//!    writer's commit; bytes that fail are discarded (the ingest aborted), a body that ends
//!    early keeps its verified-by-hash-state prefix for the next resume.
//! 4. **Name** the image once every blob is committed, then drop the lease.
//! 5. **Unpack** ([`pull_and_unpack`]) through [`crate::unpack::unpack`].
//!
//! ## Unpack while downloading
//! [`crate::unpack`] reads each layer from the content store and has no streaming source (the
//! API gap). [`pull_and_unpack`] therefore has its own clearly separated streaming path
//! (`stream`): a fresh layer download is teed into the content writer and, through a bounded
//! channel, into an applier thread extracting into a detached snapshot; the snapshot is
//! committed (bottom-up, rebased) only after the blob's digest (content store) and the diffID
//! (applier) verified. A download retried within the pull resumes with `Range` and keeps
//! feeding the same applier. Whatever it could not do (layers resumed from an earlier pull's
//! ingest or already stored, a registry ignoring `Range` on a retry, snapshotters without
//! rebase, layers hardlinking into lower ones) is then done by a normal
//! [`crate::unpack::unpack`], which also labels the blobs.
//!
//! # Push ([`push`])
//! Every blob the image references is checked with `HEAD /blobs/<digest>`; a missing one is
//! mounted from another repository of the same registry (`POST uploads/?mount=&from=`) when the
//! caller names one, else uploaded: `POST` then `PUT ?digest=` with the whole body for blobs up
//! to [`PushOptions::chunk_size`], else `PATCH` chunks and a final `PUT ?digest=`. Manifests go
//! last, children before the index.
//!
//! A chunked upload that fails transiently asks the registry where it stands (`GET` on the
//! upload URL, whose `Range: 0-LAST` gives the bytes received) and goes on from there. A
//! session the registry lost or cancelled starts again from byte 0: distribution 2.8 signs the
//! offset into the upload URL (`_state`) and cancels a session whose size no longer matches it,
//! which is what a `PATCH` cut in the middle of its body leaves; a `PATCH` lost whole resumes.
//! A failed monolithic `PUT` starts a new upload (after checking the blob did not land).
//!
//! # Retries
//! Transient failures (refused or reset connections, bodies cut short, 408/429/5xx) are
//! retried with bounded exponential backoff and jitter ([`RetryPolicy`], `Retry-After`
//! honoured); 401, 403, 404, digest mismatches, protocol and TLS errors are not. A retried
//! blob download resumes with `Range` from what its ingest holds, feeding the same streamed
//! apply, so no byte is fetched twice. Requests with a body that cannot be replayed as they
//! are (`PATCH`, an upload `PUT`) are never repeated blindly: push recovers them as above.
//!
//! # Authentication
//! Anonymous first; a 401 challenge is answered once: `Basic` with the configured credentials,
//! `Bearer` by fetching a token from the challenge's realm (with `service` and our scope).
//! Credentials come from [`RegistryOptions::credentials`], else the docker-style auth file
//! ([`auth::default_auth_file`]) with its credential helpers (`credHelpers`, `credsStore`;
//! [`helper`]). An identity token (user `<token>`) is exchanged for a bearer token with
//! `grant_type=refresh_token`. A bearer token is replaced shortly before it expires (its
//! answer's `expires_in`, counted from `issued_at` when given, 60 s by default; see
//! `token`), so a long pull does not pay a refused request per expired token; a token the
//! registry refuses anyway (401 `invalid_token`) is replaced too and the request repeated,
//! so long pulls and chunked pushes outlive short-lived tokens; a token that does not grant the
//! action (`insufficient_scope`, e.g. push with a pull-only account) is an
//! [`Error::Unauthorized`] saying so. [`remove_credentials_with`] is `logout`: the helper's
//! `erase`, and the inline entries dropped. Redirects (up to 5, loops refused) never carry
//! credentials to another host. Plain HTTP is used only when [`RegistryOptions::plain_http`]
//! is set or the host is in [`RegistryOptions::insecure_hosts`] (or a `hosts.toml` names an
//! `http://` endpoint).
//!
//! # Mirrors (`hosts.toml`)
//! With [`RegistryOptions::hosts_dir`], containerd's `<dir>/<host>/hosts.toml` gives a host
//! its endpoints: mirrors (`[host."URL"]`, tried in order, with `capabilities`) then the
//! upstream (`server`), each with its own `ca`, `client`, `skip_verify`, `override_path`,
//! `header` (extra request headers) and `dial_timeout` (connect timeout).
//! A tag resolves on the first endpoint that may `resolve` and answers; every later request
//! (child manifest, config, layer) goes to the endpoints that may `pull`, in order, a host
//! failing that request handing it over to the next (a layer resuming with `Range`), so one
//! blob missing on a mirror is fetched from the upstream while the others still come from
//! the mirror; push goes to the first that may `push`. See `hosts` and `fallback`.
//!
//! # TLS
//! rustls through `ureq` (ring), Mozilla's roots by default. A registry with a private CA is
//! trusted through [`RegistryOptions::ca_files`] or a docker-style
//! [`RegistryOptions::certs_dir`] (`<dir>/<host[:port]>/ca.crt`); its roots are then the system
//! bundle plus those CAs. A client certificate for mutual TLS comes from the same directory
//! (`client.cert` + `client.key`). A `hosts.toml` endpoint adds its own `ca` files and
//! `client` pair, or turns verification off (`skip_verify`). A certificate that does not
//! verify is [`Error::Tls`], with a hint, and is not retried.
//!
//! # Concurrency
//! Pulls of the same image in several threads or processes share the work through the store's
//! ingest locks: a blob being written by one puller is waited for by the other.

pub mod auth;
mod client;
pub mod error;
mod fallback;
mod fetch;
pub mod helper;
mod hosts;
mod pull;
mod push;
mod retry;
mod stream;
mod tls;
mod token;

use std::ffi::OsString;
use std::path::PathBuf;

use berth_oci::Reference;

pub use auth::{
    Credentials, IDENTITY_TOKEN_USER, SavedIn, credentials_from_file, credentials_from_file_with,
    default_auth_file, remove_credentials, remove_credentials_with, save_credentials,
    save_credentials_with,
};
pub use error::{Error, ErrorKind, Result};
pub use pull::{PullOptions, PullReport, pull, pull_and_unpack};
pub use push::{PushOptions, PushReport, push};
pub use retry::RetryPolicy;

pub use crate::import::PlatformChoice;

use client::Client;

/// The Accept list for manifests: OCI index/manifest and Docker list/manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Use plain HTTP for the registry of the reference.
    pub plain_http: bool,
    /// Hosts (`host[:port]`) reached with plain HTTP.
    pub insecure_hosts: Vec<String>,
    /// Credentials to use instead of the auth file's.
    pub credentials: Option<Credentials>,
    /// The auth file; `None` is [`default_auth_file`].
    pub auth_file: Option<PathBuf>,
    /// Extra CA certificates (PEM files) trusted for every registry, with the system bundle
    /// (see the `tls` notes in the module docs).
    pub ca_files: Vec<PathBuf>,
    /// A docker-style certificates directory (`/etc/docker/certs.d` layout):
    /// `<dir>/<host[:port]>/*.crt` are CAs trusted for that registry, and `NAME.cert` with
    /// `NAME.key` a client certificate for mutual TLS. `None`: none.
    pub certs_dir: Option<PathBuf>,
    /// A containerd-style hosts directory (`/etc/containerd/certs.d` layout):
    /// `<dir>/<host[:port]>/hosts.toml` (else `<dir>/_default/hosts.toml`) names mirrors,
    /// the upstream `server`, per-host TLS (`ca`, `client`, `skip_verify`), extra request
    /// headers (`header`) and connect timeouts (`dial_timeout`); see `hosts` in the module
    /// docs. `None`: none.
    pub hosts_dir: Option<PathBuf>,
    /// Where `docker-credential-*` helpers named by the auth file are looked up (`PATH`
    /// format), also the `PATH` they run with; `None` is the process's `PATH`.
    pub helper_path: Option<OsString>,
    /// How transient failures (refused or reset connections, cut bodies, 408/429/5xx) are
    /// retried; see [`RetryPolicy`].
    pub retry: RetryPolicy,
}

/// The host requests for `domain` go to (docker.io is served by registry-1.docker.io).
pub fn registry_host(domain: &str) -> &str {
    if domain == "docker.io" || domain == "index.docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// Parses and normalises a reference (`busybox` → `docker.io/library/busybox:latest`).
///
/// # Errors
/// [`Error::InvalidReference`].
pub fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| Error::InvalidReference {
        reference: s.to_owned(),
        reason: e.to_string(),
    })
}

impl RegistryOptions {
    /// The credentials for `domain`: the explicit ones, else the auth file's (its credential
    /// helpers included).
    ///
    /// # Errors
    /// As [`credentials_from_file_with`].
    pub fn credentials_for(&self, domain: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.credentials {
            return Ok(Some(c.clone()));
        }
        match self.auth_file.clone().or_else(default_auth_file) {
            Some(path) => credentials_from_file_with(&path, domain, self.helper_path.as_deref()),
            None => Ok(None),
        }
    }

    fn is_plain(&self, domain: &str) -> bool {
        self.plain_http || self.insecure_hosts.iter().any(|h| h == domain)
    }

    /// A client for the repository of `reference` at endpoint `ep` with the given token
    /// scopes' actions.
    fn client_at(
        &self,
        reference: &Reference,
        ep: &hosts::Endpoint,
        actions: &str,
    ) -> Result<Client> {
        Client::for_endpoint(
            self,
            reference.domain(),
            ep,
            reference.path(),
            vec![format!("repository:{}:{actions}", reference.path())],
        )
    }
}

/// Checks that `registry` (`host[:port]`) accepts the credentials: `GET /v2/` answering any
/// challenge, as `docker login` does.
///
/// # Errors
/// [`Error::Unauthorized`] when refused; transport and status errors.
pub fn check_login(registry: &str, opts: &RegistryOptions) -> Result<()> {
    // The upstream as a `hosts.toml` describes it (its TLS settings), else the default.
    let endpoints = hosts::endpoints(opts, registry)?;
    let client = match endpoints.iter().find(|e| e.upstream) {
        Some(ep) => Client::for_endpoint(opts, registry, ep, "", Vec::new())?,
        None => Client::new(opts, registry, "", Vec::new())?,
    };
    let url = client.base_url();
    client.send_expect(ureq::http::Method::GET, &url, &[], None, &[200])?;
    Ok(())
}
