//! Retries against a real registry (Debian's `docker-registry` on loopback) behind a small
//! fault-injecting proxy: 503/429 with `Retry-After`, connections dropped in the middle of a
//! layer (resumed with `Range` from the ingest, no byte fetched twice), a registry that is down
//! and comes back within the budget; and failures that are not retried (404, 403, a digest
//! mismatch); chunked pushes that lose a connection go on from the offset the registry reports,
//! or start the blob again when the registry cancelled the session.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::ErrorKind;
use berth_image::registry::{self, PullOptions, RegistryOptions, RetryPolicy};
use berth_image::unpack;
use berth_oci::Digest;
use registry_support::setup::{
    Store, assert_complete, busybox_registry, import_as, pull_with, seeded, store,
};
use registry_support::{FakeServer, Registry, Resp, counter, fixture, forward};

fn opts(s: &Store, retry: RetryPolicy) -> PullOptions<'static> {
    pull_with(RegistryOptions {
        plain_http: true,
        auth_file: Some(s.auth_file.clone()),
        retry,
        ..RegistryOptions::default()
    })
}

fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(2),
    }
}

/// Layers (digest, size) and config of the image `name` in `s`.
fn layers_of(s: &Store, name: &str) -> (Vec<(Digest, u64)>, Digest) {
    let image = s.store.images().get(name).unwrap();
    let r = unpack::resolve(&s.store, &image.target, None).unwrap();
    (
        r.layers
            .iter()
            .map(|(d, _)| (d.digest.clone(), d.size))
            .collect(),
        r.config,
    )
}

/// Seeds the Debian fixture and learns its layers with a direct pull.
fn debian() -> Option<(Registry, Vec<(Digest, u64)>)> {
    let (reg, _) = seeded(
        Registry::start(None),
        "debian-gzip.oci.tar",
        "debian:bookworm",
    )?;
    let scratch = store();
    let direct = format!("{}/debian:bookworm", reg.host());
    registry::pull(
        &scratch.store,
        &direct,
        &opts(&scratch, RetryPolicy::none()),
    )
    .unwrap();
    let (mut layers, _) = layers_of(&scratch, &direct);
    layers.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    assert!(layers[0].1 > 3 << 20, "largest layer {}", layers[0].1);
    Some((reg, layers))
}

#[test]
fn transient_failures_are_retried_and_cut_layers_resume_with_range() {
    let Some((reg, layers)) = debian() else {
        return;
    };
    let (big, big_size) = layers[0].clone();
    let upstream = reg.port;
    let seen = counter();
    let big_gets = counter();
    let big_served = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<(Instant, String, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let (sn, bg, bs, lg) = (
        seen.clone(),
        big_gets.clone(),
        big_served.clone(),
        log.clone(),
    );
    let big_path = format!("/blobs/{big}");
    let config_seen = counter();
    let cs = config_seen.clone();
    let other_layer = layers.get(1).map(|(d, _)| format!("/blobs/{d}"));
    // The proxy: 503 (Retry-After: 1) for the first two requests of all; 429 (Retry-After: 1)
    // for the first request of the second layer; the largest layer is cut after 1 MiB on its
    // first GET and after another 512 KiB on its second.
    let proxy = FakeServer::start(move |req| {
        let n = sn.fetch_add(1, Ordering::SeqCst);
        let resp = if n < 2 {
            Resp::new(503).header("Retry-After", "1").body("busy")
        } else if other_layer
            .as_deref()
            .is_some_and(|p| req.path.ends_with(p))
            && cs.fetch_add(1, Ordering::SeqCst) == 0
        {
            Resp::new(429).header("Retry-After", "1")
        } else {
            let mut resp = forward(upstream, req);
            if req.path.ends_with(&big_path) && req.method == "GET" {
                match bg.fetch_add(1, Ordering::SeqCst) {
                    0 => resp.cut_at = Some(1 << 20),
                    1 => resp.cut_at = Some(512 << 10),
                    _ => {}
                }
                let sent = resp.cut_at.unwrap_or(resp.body.len()).min(resp.body.len());
                bs.fetch_add(sent as u64, Ordering::SeqCst);
            }
            resp
        };
        lg.lock()
            .unwrap()
            .push((Instant::now(), req.path.clone(), resp.status));
        resp
    });
    let s = store();
    let name = format!("{}/debian:bookworm", proxy.host());
    let report = registry::pull(&s.store, &name, &opts(&s, quick(5))).unwrap();
    assert_complete(&s.store, &name);

    // The largest layer took three GETs: from 0, then from each cut.
    let reqs: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/blobs/{big}")))
        .collect();
    let ranges: Vec<Option<&str>> = reqs.iter().map(|r| r.header("range")).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some(format!("bytes={}-", 1 << 20).as_str()),
            Some(format!("bytes={}-", (1 << 20) + (512 << 10)).as_str()),
        ]
    );
    assert_eq!(report.resumed, vec![(big.clone(), 1 << 20)]);
    // No byte of it crossed the proxy twice.
    assert_eq!(big_served.load(Ordering::SeqCst), big_size);
    let layer_total: u64 = layers.iter().map(|(_, n)| n).sum();
    assert_eq!(report.downloaded, layer_total);

    // Retry-After was honoured: the request after each 503/429 came at least ~1 s later.
    let log = log.lock().unwrap();
    for (i, (t, path, status)) in log.iter().enumerate() {
        if *status == 503 || *status == 429 {
            let next = log[i + 1..]
                .iter()
                .find(|(_, p, _)| p == path)
                .expect("the request was repeated");
            let gap = next.0.duration_since(*t);
            assert!(gap >= Duration::from_millis(900), "{path}: {gap:?}");
        }
    }
}

#[test]
fn not_found_forbidden_and_bad_digests_are_not_retried() {
    let Some((reg, layers)) = debian() else {
        return;
    };
    let (big, _) = layers[0].clone();
    let upstream = reg.port;
    let big_path = format!("/blobs/{big}");
    // Tag `forbidden` answers 403; the largest layer arrives with one byte flipped.
    let proxy = FakeServer::start(move |req| {
        if req.path.ends_with("/manifests/forbidden") {
            return Resp::new(403).body(r#"{"errors":[{"code":"DENIED"}]}"#);
        }
        let mut resp = forward(upstream, req);
        if req.path.ends_with(&big_path) && resp.body.len() > 100 {
            resp.body[100] ^= 0x55;
        }
        resp
    });
    let many = quick(5);
    let count = |path: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(path))
            .count()
    };

    let s = store();
    let e = registry::pull(
        &s.store,
        &format!("{}/debian:nope", proxy.host()),
        &opts(&s, many),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!e.is_transient());
    assert_eq!(count("/manifests/nope"), 1);

    let e = registry::pull(
        &s.store,
        &format!("{}/debian:forbidden", proxy.host()),
        &opts(&s, many),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert_eq!(count("/manifests/forbidden"), 1);

    let name = format!("{}/debian:bookworm", proxy.host());
    let e = registry::pull(&s.store, &name, &opts(&s, many)).unwrap_err();
    assert!(matches!(e, registry::Error::DigestMismatch { .. }), "{e}");
    assert_eq!(count(&format!("/blobs/{big}")), 1);
    assert!(!s.store.exists(&big));
    assert!(s.store.status(&format!("pull-{big}")).is_err());
    assert!(s.store.images().get(&name).is_err());
}

#[test]
fn registry_down_then_back_within_the_budget() {
    let Some((mut reg, _)) = debian() else {
        return;
    };
    let s = store();
    let name = format!("{}/debian:bookworm", reg.host());
    // Nobody listens: connection refused is retried, then reported.
    reg.stop();
    let e = registry::pull(&s.store, &name, &opts(&s, quick(3))).unwrap_err();
    assert!(matches!(e, registry::Error::Transport { .. }), "{e}");
    assert!(e.is_transient());
    // Comes back while a pull is backing off: the pull succeeds.
    let patient = RetryPolicy {
        max_attempts: 12,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_millis(800),
    };
    std::thread::scope(|sc| {
        let h = sc.spawn(|| registry::pull(&s.store, &name, &opts(&s, patient)));
        std::thread::sleep(Duration::from_millis(1200));
        reg.restart();
        h.join().unwrap().unwrap();
    });
    assert_complete(&s.store, &name);
}

/// A store holding the busybox fixture as `berth.test/busybox:src`; the sizes of its blobs
/// larger than `chunk` (the chunked uploads).
fn busybox_source(chunk: u64) -> Option<(Store, Vec<u64>)> {
    let busybox = fixture("busybox.oci.tar")?;
    let src = store();
    import_as(&src.store, &busybox, "berth.test/busybox:src");
    let (layers, config) = layers_of(&src, "berth.test/busybox:src");
    let config_size = src.store.info(&config).unwrap().size;
    let chunked = layers
        .iter()
        .map(|(_, n)| *n)
        .chain([config_size])
        .filter(|n| *n > chunk)
        .collect();
    Some((src, chunked))
}

fn push_opts(s: &Store, chunk: u64) -> registry::PushOptions<'static> {
    registry::PushOptions {
        registry: opts(s, quick(5)).registry,
        chunk_size: chunk,
        ..registry::PushOptions::default()
    }
}

/// Pulls `reference` straight from `reg` into a fresh store and checks every blob.
fn pull_back(reg: &Registry, repo_at_digest: &str) {
    let dst = store();
    let name = format!("{}/{repo_at_digest}", reg.host());
    registry::pull(&dst.store, &name, &opts(&dst, RetryPolicy::none())).unwrap();
    assert_complete(&dst.store, &name);
}

#[test]
fn chunked_push_resumes_at_the_registry_offset_after_a_dropped_connection() {
    const CHUNK: u64 = 64 << 10;
    let (Some(reg), Some((src, chunked))) = (Registry::start(None), busybox_source(CHUNK)) else {
        return;
    };
    assert!(
        !chunked.is_empty(),
        "the fixture has a blob over {CHUNK} bytes"
    );
    let upstream = reg.port;
    let patches = counter();
    let whole_puts = counter();
    let patched = Arc::new(AtomicU64::new(0));
    let manifest_puts = counter();
    let (pc, wp, pb, mp) = (
        patches.clone(),
        whole_puts.clone(),
        patched.clone(),
        manifest_puts.clone(),
    );
    // The third PATCH and the first PUT carrying a body (a monolithic upload) are read and
    // dropped without reaching the registry: the connection closes without an answer. The
    // first manifest PUT is answered 503 (Retry-After: 1).
    let proxy = FakeServer::start(move |req| {
        if req.method == "PUT"
            && req.path.contains("/manifests/")
            && mp.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Resp::new(503).header("Retry-After", "1");
        }
        if req.method == "PATCH" {
            if pc.fetch_add(1, Ordering::SeqCst) == 2 {
                return Resp::dropped();
            }
            pb.fetch_add(req.body.len() as u64, Ordering::SeqCst);
        }
        if req.method == "PUT"
            && req.path.contains("/blobs/uploads/")
            && !req.body.is_empty()
            && wp.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Resp::dropped();
        }
        forward(upstream, req)
    });
    let target = format!("{}/resumed/busybox:v1", proxy.host());
    let report = registry::push(
        &src.store,
        "berth.test/busybox:src",
        Some(&target),
        &push_opts(&src, CHUNK),
    )
    .unwrap();
    assert_eq!(report.resumed, 1, "{report:?}");
    assert_eq!(
        report.restarted, 1,
        "the dropped monolithic PUT: {report:?}"
    );
    assert_eq!(report.chunked, chunked.len(), "{report:?}");

    // After the dropped PATCH the client asked where the upload stood, then went on from the
    // offset the registry gave: the dropped chunk again, nothing before it.
    let reqs = proxy.requests();
    let dropped_at = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "PATCH")
        .nth(2)
        .map(|(i, _)| i)
        .unwrap();
    let dropped_range = reqs[dropped_at].header("content-range").unwrap().to_owned();
    let status = &reqs[dropped_at + 1];
    assert_eq!(status.method, "GET", "{status:?}");
    assert!(status.path.contains("/blobs/uploads/"), "{}", status.path);
    let again = &reqs[dropped_at + 2];
    assert_eq!(again.method, "PATCH");
    assert_eq!(again.header("content-range").unwrap(), dropped_range);
    assert!(!dropped_range.starts_with("0-"), "{dropped_range}");
    // The manifest PUT was repeated after the 503.
    assert_eq!(manifest_puts.load(Ordering::SeqCst), 2);
    // Every chunked byte reached the registry exactly once.
    assert_eq!(patched.load(Ordering::SeqCst), chunked.iter().sum::<u64>());

    let digest = report.digest.unwrap();
    pull_back(&reg, &format!("resumed/busybox@{digest}"));
}

#[test]
fn chunked_push_cut_in_the_middle_of_a_chunk_completes() {
    const CHUNK: u64 = 64 << 10;
    let (Some(reg), Some((src, chunked))) = (Registry::start(None), busybox_source(CHUNK)) else {
        return;
    };
    assert!(!chunked.is_empty());
    let upstream = reg.port;
    let patches = counter();
    let pc = patches.clone();
    // The third PATCH reaches the registry with only half its body (as if the connection broke
    // mid-body), and its answer is lost.
    let proxy = FakeServer::start(move |req| {
        if req.method == "PATCH" && pc.fetch_add(1, Ordering::SeqCst) == 2 {
            let mut half = req.clone();
            half.body.truncate(req.body.len() / 2);
            let _ = forward(upstream, &half);
            return Resp::dropped();
        }
        forward(upstream, req)
    });
    let target = format!("{}/cut/busybox:v1", proxy.host());
    let report = registry::push(
        &src.store,
        "berth.test/busybox:src",
        Some(&target),
        &push_opts(&src, CHUNK),
    )
    .unwrap();
    // distribution 2.8 signs the offset into the upload URL (`_state`); a session whose size
    // no longer matches it (the half chunk it took) is cancelled when asked about (400), so
    // the client starts that blob again from byte 0 rather than guess.
    assert_eq!(report.resumed, 0, "{report:?}");
    assert_eq!(report.restarted, 1, "{report:?}");
    let reqs = proxy.requests();
    let cut = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "PATCH")
        .nth(2)
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(reqs[cut + 1].method, "GET", "the status was asked for");
    assert_eq!(reqs[cut + 2].method, "POST", "a new upload");
    assert!(
        reqs[cut + 3]
            .header("content-range")
            .unwrap()
            .starts_with("0-")
    );
    let digest = report.digest.clone().unwrap();
    pull_back(&reg, &format!("cut/busybox@{digest}"));
}

#[test]
fn retry_after_given_as_an_http_date_is_waited_for() {
    let Some(reg) = busybox_registry(None, "dated/busybox:latest") else {
        return;
    };
    let upstream = reg.port;
    let refused = counter();
    let r = refused.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lg = log.clone();
    // The first manifest request is answered 503 with `Retry-After: <now + 3 s as an HTTP
    // date>`; everything else is forwarded.
    let proxy = FakeServer::start(move |req| {
        let resp = if req.path.contains("/manifests/") && r.fetch_add(1, Ordering::SeqCst) == 0 {
            let at = std::time::SystemTime::now() + Duration::from_secs(3);
            Resp::new(503).header("Retry-After", &httpdate::fmt_http_date(at))
        } else {
            forward(upstream, req)
        };
        lg.lock().unwrap().push((Instant::now(), req.path.clone()));
        resp
    });
    let s = store();
    let name = format!("{}/dated/busybox:latest", proxy.host());
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(10),
    };
    registry::pull(&s.store, &name, &opts(&s, policy)).unwrap();
    assert_complete(&s.store, &name);
    let log = log.lock().unwrap();
    let manifests: Vec<Instant> = log
        .iter()
        .filter(|(_, p)| p.contains("/manifests/"))
        .map(|(t, _)| *t)
        .collect();
    assert!(manifests.len() >= 2, "the manifest request was repeated");
    // The date has whole seconds: at least 2 s of the 3 remained when it was sent. Backoff
    // alone would have waited at most 20 ms.
    let gap = manifests[1].duration_since(manifests[0]);
    assert!(gap >= Duration::from_millis(1900), "waited only {gap:?}");
}
