//! The endpoints a pull fetches from, tried in order for *each request*, as containerd's
//! fetcher does: a child manifest, a config or a layer is asked of the first endpoint with
//! the `pull` capability; when that host fails (unreachable, refused, 404 or 5xx, a bad or
//! short body, a digest that does not match) the same request goes to the next one, ending
//! with the upstream. So a mirror missing one blob costs that blob a trip to the upstream
//! while every other blob still comes from the mirror.
//!
//! Each endpoint has its own client (made when first needed, then shared by the download
//! threads): its credentials and token, its TLS settings, headers and connect timeout, and
//! its own retry budget per request ([`super::RetryPolicy`]); a layer handed over keeps what
//! its ingest holds and resumes with `Range` on the next host.
//!
//! A host whose *connection* failed (refused, reset, timed out: [`Error::Transport`]) after
//! its retries is not asked again during this pull, except the last (the upstream), so a
//! dead mirror costs one request's budget, not one per blob. Any other failure (a status, a
//! bad body) is the host's answer about that request only.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_oci::Reference;

use super::RegistryOptions;
use super::client::Client;
use super::error::{Error, Result};
use super::hosts::Endpoint;

/// One endpoint of the pull.
struct Host {
    endpoint: Endpoint,
    client: OnceLock<Client>,
    /// Its connection failed after retries: skipped from now on (unless it is the last).
    down: AtomicBool,
}

/// The endpoints that may pull, in order, with their clients.
pub(crate) struct Pullers<'a> {
    opts: &'a RegistryOptions,
    reference: &'a Reference,
    hosts: Vec<Host>,
}

impl std::fmt::Debug for Pullers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hosts.iter().map(|h| &h.endpoint.authority))
            .finish()
    }
}

impl<'a> Pullers<'a> {
    /// The endpoints of `endpoints` with the `pull` capability, in order, for the
    /// repository of `reference`; `resolver` is the client that resolved the reference (its
    /// endpoint and token are reused); `unreachable` are endpoints whose connection already
    /// failed while resolving.
    pub(crate) fn new(
        opts: &'a RegistryOptions,
        reference: &'a Reference,
        endpoints: &[Endpoint],
        resolver: Option<(Endpoint, Client)>,
        unreachable: &[Endpoint],
    ) -> Pullers<'a> {
        let mut resolver = resolver;
        let hosts = endpoints
            .iter()
            .filter(|e| e.capabilities.pull)
            .map(|e| {
                let client = OnceLock::new();
                if let Some((re, _)) = &resolver
                    && re == e
                    && let Some((_, c)) = resolver.take()
                {
                    let _ = client.set(c);
                }
                Host {
                    endpoint: e.clone(),
                    client,
                    down: AtomicBool::new(unreachable.contains(e)),
                }
            })
            .collect();
        Pullers {
            opts,
            reference,
            hosts,
        }
    }

    /// Whether no endpoint may pull.
    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn client<'h>(&self, host: &'h Host) -> Result<&'h Client> {
        if let Some(c) = host.client.get() {
            return Ok(c);
        }
        let made = self
            .opts
            .client_at(self.reference, &host.endpoint, "pull")?;
        // Another thread may have made one meanwhile: either will do.
        Ok(host.client.get_or_init(|| made))
    }

    /// Runs `op` (one request, with its retries) on each endpoint in order until one
    /// succeeds or fails for a reason that is not the host's ([`Error::is_host_failure`]).
    /// `what` names the request in logs.
    ///
    /// # Errors
    /// The last endpoint's error when every one failed; a local error (store, files) at once;
    /// client set-up errors (credentials, TLS files) of the endpoint being tried.
    pub(crate) fn each<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&Client) -> Result<T>,
    ) -> Result<T> {
        let mut failure = None;
        let n = self.hosts.len();
        for (i, host) in self.hosts.iter().enumerate() {
            let last = i + 1 == n;
            if !last && host.down.load(Ordering::Relaxed) {
                continue;
            }
            let client = self.client(host)?;
            match op(client) {
                Err(e) if !last && e.is_host_failure() => {
                    if matches!(e, Error::Transport { .. }) {
                        host.down.store(true, Ordering::Relaxed);
                    }
                    tracing::warn!(host = %host.endpoint.authority, what, error = %e, "failed on this host; trying the next");
                    failure = Some(e);
                }
                r => return r,
            }
        }
        Err(failure.unwrap_or_else(|| Error::Protocol {
            url: what.to_owned(),
            reason: "no endpoint may pull".into(),
        }))
    }
}
