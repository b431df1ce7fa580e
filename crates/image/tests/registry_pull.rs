//! Pull and push against a real registry (Debian's `docker-registry`, distribution 2.8) on a
//! loopback port: anonymous, htpasswd basic auth, a bearer-token proxy; resume with Range after
//! a cut connection and a registry restart; a registry that ignores Range; two concurrent
//! pulls; push (monolithic, chunked, cross-repository mount) and pull back by digest.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_image::registry::{
    self, Credentials, PullOptions, PushOptions, RegistryOptions, RetryPolicy, save_credentials,
};
use berth_image::{ErrorKind, unpack};
use registry_support::setup::{
    Store, assert_complete, busybox_registry, import_as, pull_with, seeded, store,
};
use registry_support::{FakeServer, Registry, Resp, counter, fixture, forward};

fn reg_opts(s: &Store) -> RegistryOptions {
    RegistryOptions {
        plain_http: true,
        auth_file: Some(s.auth_file.clone()),
        ..RegistryOptions::default()
    }
}

fn pull_opts(s: &Store) -> PullOptions<'static> {
    pull_with(reg_opts(s))
}

#[test]
fn pull_anonymous_then_again_from_the_store() {
    let Some(reg) = busybox_registry(None, "busybox:latest") else {
        return;
    };
    let s = store();
    let name = format!("{}/busybox:latest", reg.host());
    let report = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap();
    assert_eq!(report.name, name);
    assert!(report.downloaded > 0);
    assert_eq!(report.present, 0);
    assert_complete(&s.store, &name);
    // No lease left behind.
    assert!(s.store.leases().list().unwrap().is_empty());

    let again = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.target, report.target);

    // By digest.
    let by_digest = format!("{}/busybox@{}", reg.host(), report.target.digest);
    let s2 = store();
    let r2 = registry::pull(&s2.store, &by_digest, &pull_opts(&s2)).unwrap();
    assert_eq!(r2.target.digest, report.target.digest);

    // Not there.
    let missing = format!("{}/busybox:nope", reg.host());
    let e = registry::pull(&s2.store, &missing, &pull_opts(&s2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(s2.store.images().get(&missing).is_err());
}

#[test]
fn pull_with_basic_auth() {
    let Some(reg) = busybox_registry(Some(("berth", "s3cret")), "private/busybox:latest") else {
        return;
    };
    let name = format!("{}/private/busybox:latest", reg.host());

    let s = store();
    let e = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);

    let mut wrong = pull_opts(&s);
    wrong.registry.credentials = Some(Credentials {
        username: "berth".into(),
        password: "wrong".into(),
    });
    let e = registry::pull(&s.store, &name, &wrong).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    assert!(s.store.images().get(&name).is_err());

    // From the auth file, as `berth login` writes it.
    save_credentials(
        &s.auth_file,
        &reg.host(),
        &Credentials {
            username: "berth".into(),
            password: "s3cret".into(),
        },
    )
    .unwrap();
    registry::check_login(&reg.host(), &reg_opts(&s)).unwrap();
    let report = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap();
    assert_eq!(report.name, name);
    assert_complete(&s.store, &name);
}

#[test]
fn pull_through_a_bearer_token_proxy() {
    let Some(reg) = busybox_registry(None, "tok/busybox:latest") else {
        return;
    };
    const TOKEN: &str = "issued-by-the-test-0123";
    let upstream = reg.port;
    let own_port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let p = own_port.clone();
    // The proxy is its own token realm: /token wants basic berth:tokpass and issues TOKEN;
    // everything else wants `Bearer TOKEN` and is forwarded to the registry.
    let proxy = FakeServer::start(move |req| {
        if req.path.starts_with("/token") {
            return if req.header("authorization") == Some("Basic YmVydGg6dG9rcGFzcw==") {
                Resp::new(200).body(format!("{{\"token\":\"{TOKEN}\"}}"))
            } else {
                Resp::new(401)
            };
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            let port = p.load(Ordering::SeqCst);
            return Resp::new(401).header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"berth-test\",scope=\"repository:tok/busybox:pull\""
                ),
            );
        }
        forward(upstream, req)
    });
    own_port.store(proxy.port, Ordering::SeqCst);
    let name = format!("{}/tok/busybox:latest", proxy.host());

    let s = store();
    let e = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");

    let mut opts = pull_opts(&s);
    opts.registry.credentials = Some(Credentials {
        username: "berth".into(),
        password: "tokpass".into(),
    });
    let report = registry::pull(&s.store, &name, &opts).unwrap();
    assert_complete(&s.store, &report.name);
    let reqs = proxy.requests();
    let token_req = reqs
        .iter()
        .find(|r| r.path.starts_with("/token") && r.header("authorization").is_some())
        .expect("a token request with credentials");
    assert!(
        token_req.path.contains("service=berth-test"),
        "{}",
        token_req.path
    );
    assert!(
        token_req
            .path
            .contains("scope=repository%3Atok%2Fbusybox%3Apull"),
        "{}",
        token_req.path
    );
    // Credentials went to the token realm only; the registry saw the bearer token.
    assert!(
        reqs.iter()
            .filter(|r| !r.path.starts_with("/token"))
            .all(|r| r
                .header("authorization")
                .is_none_or(|a| a.starts_with("Bearer ")))
    );
}

/// The largest layer of the image at `name` in `reg`, read through a first pull.
fn largest_layer(s: &Store, name: &str) -> (berth_oci::Digest, u64) {
    let image = s.store.images().get(name).unwrap();
    let resolved = unpack::resolve(&s.store, &image.target, None).unwrap();
    resolved
        .layers
        .iter()
        .map(|(d, _)| (d.digest.clone(), d.size))
        .max_by_key(|(_, n)| *n)
        .unwrap()
}

#[test]
fn interrupted_pull_resumes_with_range() {
    let Some((mut reg, _)) = seeded(
        Registry::start(None),
        "debian-gzip.oci.tar",
        "debian:bookworm",
    ) else {
        return;
    };
    // Learn the layer digest from a pull into a scratch store.
    let scratch = store();
    let direct = format!("{}/debian:bookworm", reg.host());
    registry::pull(&scratch.store, &direct, &pull_opts(&scratch)).unwrap();
    let (layer, size) = largest_layer(&scratch, &direct);
    assert!(
        size > 2 << 20,
        "the fixture's largest layer is {size} bytes"
    );
    drop(scratch);

    // A proxy that cuts the first full download of that layer after 1 MiB.
    let upstream = Arc::new(std::sync::atomic::AtomicU16::new(reg.port));
    let cuts = counter();
    let (u, c) = (upstream.clone(), cuts.clone());
    let layer_path = format!("/blobs/{layer}");
    let proxy = FakeServer::start(move |req| {
        let mut resp = forward(u.load(Ordering::SeqCst), req);
        if req.method == "GET"
            && req.path.ends_with(&layer_path)
            && req.header("range").is_none()
            && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            resp.cut_at = Some(1 << 20);
        }
        resp
    });
    let via_proxy = format!("{}/debian:bookworm", proxy.host());
    let s = store();
    let mut opts = pull_opts(&s);
    opts.max_concurrent = 1;
    // Across runs: this pull gives up at the first failure (retries are registry_retry's).
    opts.registry.retry = RetryPolicy::none();
    let e = registry::pull(&s.store, &via_proxy, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            registry::Error::Truncated { .. } | registry::Error::Transport { .. }
        ),
        "{e}"
    );
    assert!(!s.store.exists(&layer));
    assert!(s.store.images().get(&via_proxy).is_err());
    let partial = s.store.status(&format!("pull-{layer}")).unwrap();
    assert!(partial.offset > 0, "partial ingest at {}", partial.offset);

    // The registry goes away and comes back.
    reg.restart();
    upstream.store(reg.port, Ordering::SeqCst);

    let report = registry::pull(&s.store, &via_proxy, &opts).unwrap();
    let resumed = report
        .resumed
        .iter()
        .find(|(d, _)| *d == layer)
        .expect("the layer download resumed");
    assert!(resumed.1 > 0);
    assert_eq!(resumed.1, partial.offset);
    let ranged = proxy
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with(&format!("/blobs/{layer}")) && r.header("range").is_some())
        .expect("a Range request");
    assert_eq!(
        ranged.header("range").unwrap(),
        format!("bytes={}-", partial.offset)
    );
    assert_complete(&s.store, &via_proxy);
    assert!(s.store.status(&format!("pull-{layer}")).is_err());
}

#[test]
fn registry_ignoring_range_restarts_the_ingest() {
    let Some((reg, _)) = seeded(
        Registry::start(None),
        "debian-gzip.oci.tar",
        "debian:bookworm",
    ) else {
        return;
    };
    let upstream = reg.port;
    let cut = counter();
    let c = cut.clone();
    // Cuts every first blob answer at 256 KiB, and drops Range headers.
    let proxy = FakeServer::start(move |req| {
        let mut req = req.clone();
        req.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("range"));
        let mut resp = forward(upstream, &req);
        if req.path.contains("/blobs/")
            && resp.body.len() > 1 << 20
            && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            resp.cut_at = Some(256 << 10);
        }
        resp
    });
    let name = format!("{}/debian:bookworm", proxy.host());
    let s = store();
    let mut once = pull_opts(&s);
    once.registry.retry = RetryPolicy::none();
    assert!(registry::pull(&s.store, &name, &once).is_err());
    let report = registry::pull(&s.store, &name, &pull_opts(&s)).unwrap();
    assert!(report.resumed.is_empty(), "{:?}", report.resumed);
    assert_complete(&s.store, &name);
}

#[test]
fn two_concurrent_pulls_of_one_image() {
    let Some((reg, _)) = seeded(
        Registry::start(None),
        "debian-gzip.oci.tar",
        "debian:bookworm",
    ) else {
        return;
    };
    let s = store();
    let name = format!("{}/debian:bookworm", reg.host());
    let reports: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| registry::pull(&s.store, &name, &pull_opts(&s))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(reports[0].target, reports[1].target);
    assert_complete(&s.store, &name);
    // A blob is not downloaded twice in full: together they moved at most one copy plus
    // the documents.
    let image = s.store.images().get(&name).unwrap();
    let resolved = unpack::resolve(&s.store, &image.target, None).unwrap();
    let layers: u64 = resolved.layers.iter().map(|(d, _)| d.size).sum();
    assert!(reports[0].downloaded + reports[1].downloaded <= layers + (1 << 20));
}

#[test]
fn push_then_pull_back_by_digest_and_mount() {
    let (Some(reg), Some(busybox)) = (
        Registry::start(Some(("pusher", "pw"))),
        fixture("busybox.oci.tar"),
    ) else {
        return;
    };
    let src = store();
    import_as(&src.store, &busybox, "berth.test/busybox:src");
    let creds = Credentials {
        username: "pusher".into(),
        password: "pw".into(),
    };
    let mut opts = PushOptions {
        registry: reg_opts(&src),
        chunk_size: 64 << 10,
        ..PushOptions::default()
    };
    let target = format!("{}/pushed/busybox:v1", reg.host());
    let e = registry::push(&src.store, "berth.test/busybox:src", Some(&target), &opts).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    opts.registry.credentials = Some(creds.clone());
    let report =
        registry::push(&src.store, "berth.test/busybox:src", Some(&target), &opts).unwrap();
    assert!(report.uploaded >= 2, "{report:?}");
    assert!(report.chunked >= 1, "{report:?}");
    let digest = report.digest.clone().unwrap();
    assert_eq!(
        digest,
        src.store
            .images()
            .get("berth.test/busybox:src")
            .unwrap()
            .target
            .digest
    );

    // Again: everything is there.
    let again = registry::push(&src.store, "berth.test/busybox:src", Some(&target), &opts).unwrap();
    assert_eq!(again.uploaded, 0);
    assert!(again.existing >= 2);

    // Into another repository, mounting from the first.
    opts.mount_from = Some("pushed/busybox".into());
    let other = format!("{}/other/busybox:v1", reg.host());
    let mounted =
        registry::push(&src.store, "berth.test/busybox:src", Some(&other), &opts).unwrap();
    assert_eq!(mounted.uploaded, 0, "{mounted:?}");
    assert!(mounted.mounted >= 2, "{mounted:?}");

    // Pull both back by digest into a fresh store.
    for repo in ["pushed/busybox", "other/busybox"] {
        let dst = store();
        let mut po = pull_opts(&dst);
        po.registry.credentials = Some(creds.clone());
        let by_digest = format!("{}/{repo}@{digest}", reg.host());
        let pulled = registry::pull(&dst.store, &by_digest, &po).unwrap();
        assert_eq!(pulled.target.digest, digest);
        assert_complete(&dst.store, &by_digest);
    }
}
