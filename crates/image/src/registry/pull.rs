//! Pull: resolve a reference, select platforms as import does, store every blob verified,
//! resuming partial layer ingests with `Range`, then name the image (see the module docs of
//! [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::{Duration, SystemTime};

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, Reference};
use berth_snapshot::Snapshotter;
use ureq::http::Method;

use super::client::{Client, Response};
use super::error::{Error, Result};
use super::fallback::Pullers;
use super::fetch::download_all;
use super::retry::Backoff;
use super::stream::{StreamLayer, Streamer};
use super::{MANIFEST_ACCEPT, PlatformChoice, RegistryOptions, hosts, parse_reference};
use crate::content::ContentStore;
use crate::metadata::{Descriptor, Image, LeaseResource};
use crate::progress::{NoProgress, Progress, ProgressEvent};
use crate::unpack::{self, UnpackOptions, UnpackReport};

/// How long a pull's lease protects its blobs if the puller dies.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The cap on manifests, indexes and configs.
const MAX_DOCUMENT: u64 = manifest::MAX_DOCUMENT_SIZE;
/// Most nested indexes followed.
const MAX_DEPTH: usize = 4;

/// What to pull and how.
#[derive(Clone)]
pub struct PullOptions<'a> {
    /// How to reach the registry.
    pub registry: RegistryOptions,
    /// Which platform(s) of a multi-platform image.
    pub platform: PlatformChoice,
    /// Receives per-blob progress (kinds `index`, `manifest`, `config`, `layer`).
    pub progress: &'a dyn Progress,
    /// Most layers downloaded at once (`0` means 3).
    pub max_concurrent: usize,
}

impl std::fmt::Debug for PullOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("registry", &self.registry)
            .field("platform", &self.platform)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl Default for PullOptions<'_> {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: PlatformChoice::Host,
            progress: &NoProgress,
            max_concurrent: 0,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The name recorded (normalised reference).
    pub name: String,
    /// What the name points to.
    pub target: Descriptor,
    /// Distinct blobs the image references.
    pub blobs: usize,
    /// Bytes downloaded by this pull (resumed prefixes and stored blobs not counted).
    pub downloaded: u64,
    /// Blobs that were already stored.
    pub present: usize,
    /// Layers whose download resumed a partial ingest (left by an earlier pull, or by a failed
    /// attempt of this one), with the first offset resumed at.
    pub resumed: Vec<(Digest, u64)>,
    /// Layers applied while they downloaded and committed as snapshots by the pull itself
    /// ([`pull_and_unpack`] only; the rest is left to the unpack that follows).
    pub streamed: usize,
}

/// A layer (or other streamed blob) to download.
#[derive(Debug, Clone)]
pub(crate) struct BlobJob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) kind: &'static str,
}

/// Everything a pull will store.
#[derive(Debug, Default)]
struct Plan {
    /// Verified documents, stored from memory.
    docs: Vec<(Digest, Vec<u8>, &'static str)>,
    /// Blobs to stream.
    blobs: Vec<BlobJob>,
}

impl Plan {
    fn has(&self, d: &Digest) -> bool {
        self.docs.iter().any(|(x, _, _)| x == d) || self.blobs.iter().any(|b| &b.digest == d)
    }
}

fn doc_err(what: &str) -> impl FnOnce(berth_oci::Error) -> Error + '_ {
    move |source| Error::Document {
        what: what.to_owned(),
        source,
    }
}

/// Reads a whole document body, refusing more than the cap (declared or actual) and a body
/// shorter than its `Content-Length`.
fn read_document_body(resp: Response) -> Result<Vec<u8>> {
    let url = resp.url.clone();
    let declared = resp.content_length();
    if let Some(n) = declared
        && n > MAX_DOCUMENT
    {
        return Err(Error::TooLarge {
            url,
            size: n,
            max: MAX_DOCUMENT,
        });
    }
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Transport {
            method: "GET",
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(Error::TooLarge {
            url,
            size: bytes.len() as u64,
            max: MAX_DOCUMENT,
        });
    }
    if let Some(n) = declared
        && n != bytes.len() as u64
    {
        return Err(Error::Truncated {
            url,
            expected: n,
            got: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn check_digest(url: &str, expected: &Digest, bytes: &[u8]) -> Result<()> {
    let actual = Digest::of(expected.algorithm(), bytes);
    if &actual != expected {
        return Err(Error::DigestMismatch {
            url: url.to_owned(),
            expected: expected.clone(),
            actual,
            size: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Fetches a manifest or index by tag or digest. Returns (digest, media type, bytes).
/// Transient failures (including a body cut short) are retried.
fn fetch_manifest(
    client: &Client,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, String, Vec<u8>)> {
    let url = client.url(&format!("manifests/{reference}"));
    client.retrying(&mut client.backoff(), &url, |b| {
        fetch_manifest_once(client, b, &url, expected)
    })
}

fn fetch_manifest_once(
    client: &Client,
    backoff: &mut Backoff,
    url: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, String, Vec<u8>)> {
    let url = url.to_owned();
    let resp = client.send_expect_with(
        backoff,
        Method::GET,
        &url,
        &[("accept", MANIFEST_ACCEPT)],
        None,
        &[200],
    )?;
    let content_type = resp
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let header_digest = resp
        .header("docker-content-digest")
        .and_then(|d| d.parse::<Digest>().ok());
    let bytes = read_document_body(resp)?;
    let digest = match (expected, header_digest) {
        (Some(d), _) => {
            check_digest(&url, d, &bytes)?;
            d.clone()
        }
        (None, Some(d)) => {
            check_digest(&url, &d, &bytes)?;
            d
        }
        (None, None) => Digest::sha256(&bytes),
    };
    let doc = manifest::parse_document(&bytes, &url).map_err(doc_err(&url))?;
    let declared = doc.media_type_or_default();
    let media_type = if matches!(
        kind_of(&content_type),
        MediaKind::Index | MediaKind::Manifest
    ) {
        if kind_of(&content_type) != kind_of(&declared) {
            return Err(Error::Protocol {
                url,
                reason: format!("served as {content_type} but the document is {declared}"),
            });
        }
        content_type
    } else {
        declared
    };
    Ok((digest, media_type, bytes))
}

/// Fetches a small blob (a config) into memory, capped and verified; transient failures are
/// retried.
fn fetch_small_blob(client: &Client, digest: &Digest, size: u64) -> Result<Vec<u8>> {
    let url = client.url(&format!("blobs/{digest}"));
    if size > MAX_DOCUMENT {
        return Err(Error::TooLarge {
            url,
            size,
            max: MAX_DOCUMENT,
        });
    }
    let bytes = client.retrying(&mut client.backoff(), &url, |b| {
        let resp = client.send_expect_with(b, Method::GET, &url, &[], None, &[200])?;
        read_document_body(resp)
    })?;
    if bytes.len() as u64 != size {
        // Still report a digest mismatch when that is what it is.
        check_digest(&url, digest, &bytes)?;
        return Err(Error::Truncated {
            url,
            expected: size,
            got: bytes.len() as u64,
        });
    }
    check_digest(&url, digest, &bytes)?;
    Ok(bytes)
}

struct Planner<'a> {
    hosts: &'a Pullers<'a>,
    store: &'a ContentStore,
    choice: &'a PlatformChoice,
    reference: &'a str,
    plan: Plan,
    /// The layers of each manifest planned, for unpacking while downloading.
    layers: HashMap<Digest, Vec<StreamLayer>>,
}

impl Planner<'_> {
    /// Reads a manifest/index (from the store when present, else the registry).
    fn document(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_DOCUMENT {
            return Err(Error::TooLarge {
                url: desc.digest.to_string(),
                size: desc.size,
                max: MAX_DOCUMENT,
            });
        }
        if self.store.exists(&desc.digest) {
            return Ok(self.store.read_all(&desc.digest, MAX_DOCUMENT)?);
        }
        let what = desc.digest.to_string();
        let (_, _, bytes) = self
            .hosts
            .each(&what, |c| fetch_manifest(c, &what, Some(&desc.digest)))?;
        Ok(bytes)
    }

    /// Plans `desc` (with its bytes); returns the target to name, or `None` when no platform
    /// matches.
    fn resolve(
        &mut self,
        desc: &Descriptor,
        bytes: Vec<u8>,
        depth: usize,
    ) -> Result<Option<Descriptor>> {
        let what = desc.digest.to_string();
        let doc = manifest::parse_document(&bytes, &what).map_err(doc_err(&what))?;
        match doc {
            Document::Manifest(m) => {
                let config = Descriptor::try_from(m.value.config())?;
                if kind_of(&config.media_type) != MediaKind::Config {
                    return Err(Error::UnsupportedMediaType {
                        media_type: config.media_type,
                        digest: config.digest,
                    });
                }
                let config_bytes = if self.store.exists(&config.digest) {
                    self.store.read_all(&config.digest, MAX_DOCUMENT)?
                } else {
                    self.hosts.each(&config.digest.to_string(), |c| {
                        fetch_small_blob(c, &config.digest, config.size)
                    })?
                };
                let parsed = manifest::parse_config(&config_bytes, &config.digest.to_string())
                    .map_err(doc_err(&what))?;
                let platform = desc
                    .platform
                    .as_ref()
                    .map(berth_oci::Platform::from)
                    .unwrap_or_else(|| berth_oci::Platform::from_config(&parsed));
                if !self.choice.accepts(&platform) {
                    return Ok(None);
                }
                let diff_ids = manifest::diff_ids(&parsed).map_err(doc_err(&what))?;
                if diff_ids.len() != m.value.layers().len() {
                    return Err(Error::Protocol {
                        url: what,
                        reason: format!(
                            "{} layers but {} diff_ids in config {}",
                            m.value.layers().len(),
                            diff_ids.len(),
                            config.digest
                        ),
                    });
                }
                let chains = berth_oci::chain_ids(&diff_ids);
                let mut stream_layers = Vec::new();
                for (i, layer) in m.value.layers().iter().enumerate() {
                    let l = Descriptor::try_from(layer)?;
                    let MediaKind::Layer(compression) = kind_of(&l.media_type) else {
                        return Err(Error::UnsupportedMediaType {
                            media_type: l.media_type,
                            digest: l.digest,
                        });
                    };
                    stream_layers.push(StreamLayer {
                        index: i,
                        digest: l.digest.clone(),
                        size: l.size,
                        compression,
                        diff_id: diff_ids[i].clone(),
                        chain_id: chains[i].clone(),
                        parent_chain: i.checked_sub(1).map(|p| chains[p].clone()),
                    });
                    if !self.plan.has(&l.digest) {
                        self.plan.blobs.push(BlobJob {
                            digest: l.digest,
                            size: l.size,
                            kind: "layer",
                        });
                    }
                }
                self.layers.insert(desc.digest.clone(), stream_layers);
                if !self.plan.has(&config.digest) {
                    self.plan
                        .docs
                        .push((config.digest.clone(), config_bytes, "config"));
                }
                if !self.plan.has(&desc.digest) {
                    self.plan
                        .docs
                        .push((desc.digest.clone(), bytes, "manifest"));
                }
                Ok(Some(desc.clone()))
            }
            Document::Index(index) => {
                if depth >= MAX_DEPTH {
                    return Err(Error::Protocol {
                        url: what,
                        reason: "indexes nested too deep".into(),
                    });
                }
                let children: Vec<&berth_oci::spec::image::Descriptor> = if self.choice.is_all() {
                    index.value.manifests().iter().collect()
                } else {
                    self.choice.matcher().select(&index.value)
                };
                let mut chosen = None;
                for child in children {
                    let child = Descriptor::try_from(child)?;
                    if !matches!(
                        kind_of(&child.media_type),
                        MediaKind::Index | MediaKind::Manifest
                    ) {
                        if self.choice.is_all() {
                            continue;
                        }
                        return Err(Error::UnsupportedMediaType {
                            media_type: child.media_type,
                            digest: child.digest,
                        });
                    }
                    let child_bytes = self.document(&child)?;
                    if let Some(t) = self.resolve(&child, child_bytes, depth + 1)? {
                        chosen = Some(t);
                        if !self.choice.is_all() {
                            break;
                        }
                    }
                }
                if self.choice.is_all() {
                    if !self.plan.has(&desc.digest) {
                        self.plan.docs.push((desc.digest.clone(), bytes, "index"));
                    }
                    return Ok(Some(desc.clone()));
                }
                match chosen {
                    Some(t) => Ok(Some(t)),
                    None if depth == 0 => Err(Error::NoMatchingPlatform {
                        reference: self.reference.to_owned(),
                        platform: self.choice.to_string(),
                    }),
                    None => Ok(None),
                }
            }
        }
    }
}

/// Pulls `reference` into `store` and records its name (the normalised reference).
///
/// Blocking; downloads up to [`PullOptions::max_concurrent`] layers at once. Safe to run
/// concurrently with other pulls, imports and collections of the same store.
///
/// # Errors
/// [`Error::InvalidReference`]; [`Error::Unauthorized`]; [`Error::Status`] (404 is
/// `NotFound`); [`Error::Transport`]; [`Error::TooLarge`] for documents over 4 MiB;
/// [`Error::DigestMismatch`] and [`Error::Truncated`] for bad bodies; [`Error::Document`];
/// [`Error::NoMatchingPlatform`]; [`Error::Store`]. On error no name is recorded and nothing
/// unverified is committed; a truncated layer's ingest is kept for the next pull to resume.
pub fn pull(store: &ContentStore, reference: &str, opts: &PullOptions<'_>) -> Result<PullReport> {
    pull_inner(store, reference, opts, None)
}

fn pull_inner(
    store: &ContentStore,
    reference: &str,
    opts: &PullOptions<'_>,
    snapshotter: Option<&dyn Snapshotter>,
) -> Result<PullReport> {
    let parsed = parse_reference(reference)?;
    let name = parsed.to_string();
    let endpoints = hosts::endpoints(&opts.registry, parsed.domain())?;
    let lookup = lookup_of(&parsed);
    // Resolve: a tag on the endpoints that may resolve, a digest on those that may pull, in
    // order, the first answer wins.
    let by_digest = parsed.digest().is_some();
    let mut failure = None;
    let mut resolved = None;
    // The resolving endpoint's client, reused for the rest (its credentials and token).
    let mut resolver: Option<(hosts::Endpoint, Client)> = None;
    // Endpoints whose connection failed: not asked again (see `fallback`).
    let mut unreachable = Vec::new();
    for ep in endpoints.iter().filter(|e| {
        if by_digest {
            e.capabilities.pull
        } else {
            e.capabilities.resolve
        }
    }) {
        let client = opts.registry.client_at(&parsed, ep, "pull")?;
        match fetch_manifest(&client, &lookup, parsed.digest()) {
            Ok(r) => {
                resolved = Some(r);
                resolver = Some((ep.clone(), client));
                break;
            }
            Err(e) if e.is_host_failure() => {
                tracing::warn!(host = %ep.authority, error = %e, "resolving failed on this host; trying the next");
                if matches!(e, Error::Transport { .. }) {
                    unreachable.push(ep.clone());
                }
                failure = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let Some((digest, media_type, bytes)) = resolved else {
        return Err(failure.unwrap_or_else(|| no_endpoint(&opts.registry, &parsed, "resolve")));
    };
    let root = Descriptor::new(media_type.clone(), digest.clone(), bytes.len() as u64);
    opts.progress.on_progress(&ProgressEvent {
        item: &digest.to_string(),
        kind: if kind_of(&media_type) == MediaKind::Index {
            "index"
        } else {
            "manifest"
        },
        done: bytes.len() as u64,
        total: Some(bytes.len() as u64),
        finished: true,
    });

    // The rest request by request on the endpoints that may pull, in order: a host that
    // fails a request hands that request over to the next (see `fallback`).
    let pullers = Pullers::new(&opts.registry, &parsed, &endpoints, resolver, &unreachable);
    if pullers.is_empty() {
        return Err(no_endpoint(&opts.registry, &parsed, "pull"));
    }
    pull_from(store, &pullers, &name, &root, &bytes, opts, snapshotter)
}

/// The error for a `hosts.toml` leaving no endpoint with `capability`.
fn no_endpoint(opts: &RegistryOptions, reference: &Reference, capability: &str) -> Error {
    Error::HostsConfig {
        path: opts
            .hosts_dir
            .clone()
            .unwrap_or_default()
            .join(reference.domain())
            .join("hosts.toml"),
        reason: format!("no endpoint has the {capability:?} capability"),
    }
}

/// Everything after resolving: plan, download, store, name.
fn pull_from(
    store: &ContentStore,
    hosts: &Pullers<'_>,
    name: &str,
    root: &Descriptor,
    bytes: &[u8],
    opts: &PullOptions<'_>,
    snapshotter: Option<&dyn Snapshotter>,
) -> Result<PullReport> {
    let name = name.to_owned();
    let leases = store.leases();
    let mut lease_labels = BTreeMap::new();
    lease_labels.insert("berth.pull.reference".to_owned(), name.clone());
    let lease = leases.create("", lease_labels, Some(SystemTime::now() + LEASE_TTL))?;
    let result = (|| -> Result<PullReport> {
        let mut planner = Planner {
            hosts,
            store,
            choice: &opts.platform,
            reference: &name,
            plan: Plan::default(),
            layers: HashMap::new(),
        };
        let target =
            planner
                .resolve(root, bytes.to_vec(), 0)?
                .ok_or_else(|| Error::NoMatchingPlatform {
                    reference: name.clone(),
                    platform: opts.platform.to_string(),
                })?;
        let plan = planner.plan;
        let stream_layers = planner.layers.remove(&target.digest).unwrap_or_default();
        let streamer = snapshotter.and_then(|sn| Streamer::new(sn, stream_layers.clone()));
        let protect = |d: &Digest| -> Result<()> {
            leases.add_resource(&lease.id, LeaseResource::Content(d.clone()))?;
            Ok(())
        };
        let mut report = PullReport {
            name: name.clone(),
            target: target.clone(),
            blobs: plan.docs.len() + plan.blobs.len(),
            downloaded: 0,
            present: 0,
            resumed: Vec::new(),
            streamed: 0,
        };
        let downloads = download_all(store, hosts, &plan.blobs, &protect, opts, streamer.as_ref());
        if let Some(s) = &streamer {
            // Only verified layers are ready; commit what can be, in order, even after a
            // failure elsewhere (they are complete layers a retry reuses).
            report.streamed = s.commit_in_order(&stream_layers);
        }
        let outcomes = downloads?;
        for o in outcomes {
            report.downloaded += o.downloaded;
            if o.present {
                report.present += 1;
            }
            if let Some(off) = o.resumed_at {
                report.resumed.push((o.digest, off));
            }
        }
        // Documents last among the blobs, children before parents (plan order).
        for (d, doc, _kind) in &plan.docs {
            protect(d)?;
            if store.exists(d) {
                report.present += 1;
                continue;
            }
            store.ingest(
                &format!("pull-{d}"),
                doc.as_slice(),
                d,
                Some(doc.len() as u64),
                &BTreeMap::new(),
                &mut |_, _| {},
            )?;
        }
        store.images().put(Image::new(name.clone(), target))?;
        Ok(report)
    })();
    let cleanup = leases.delete(&lease.id);
    let report = result?;
    cleanup?;
    Ok(report)
}

/// What the manifests endpoint is asked for: the digest when the reference has one, else the
/// tag.
fn lookup_of(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => berth_oci::reference::DEFAULT_TAG.to_owned(),
    }
}

/// Pulls `reference` and unpacks it into `snapshotter` ([`crate::unpack::unpack`], platform
/// from `opts` when it names one).
///
/// # Errors
/// As [`pull`]; [`Error::Unpack`].
pub fn pull_and_unpack(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
    reference: &str,
    opts: &PullOptions<'_>,
    unpack_opts: &UnpackOptions<'_>,
) -> Result<(PullReport, UnpackReport)> {
    let report = pull_inner(store, reference, opts, Some(snapshotter))?;
    let mut uo = *unpack_opts;
    let platform;
    if let PlatformChoice::Only(p) = &opts.platform {
        platform = p.clone();
        uo.platform = Some(&platform);
    }
    let unpacked = unpack::unpack(store, snapshotter, &report.target, &uo)?;
    Ok((report, unpacked))
}
