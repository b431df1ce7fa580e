//! A misbehaving registry (a small std::net server): 404, 401 without and with wrong
//! credentials, wrong digests, truncated bodies, a lying Content-Length, redirect loops,
//! oversized manifests, a redirect to another host. Each pull fails with a clear error, records
//! no name and stores nothing unverified; credentials never reach another host.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::sync::Arc;

use berth_image::ErrorKind;
use berth_image::content::ContentStore;
use berth_image::registry::{self, Credentials, PullOptions, RegistryOptions, RetryPolicy};
use berth_oci::Digest;
use registry_support::{FakeServer, Req, Resp, tempdir};

/// A one-layer image served by the fake registry.
struct Image {
    layer: Vec<u8>,
    layer_digest: Digest,
    config: Vec<u8>,
    config_digest: Digest,
    manifest: Vec<u8>,
    manifest_digest: Digest,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn image() -> Image {
    image_for(host_arch(), 0)
}

fn image_for(arch: &str, seed: u32) -> Image {
    let layer: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layer_digest = Digest::sha256(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        arch,
        Digest::sha256(b"whatever")
    )
    .into_bytes();
    let config_digest = Digest::sha256(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let manifest_digest = Digest::sha256(&manifest);
    Image {
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
        manifest_digest,
    }
}

/// The well-behaved answer for `req`.
fn serve(img: &Image, req: &Req) -> Resp {
    let p = &req.path;
    if p.contains("/manifests/") {
        return Resp::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &img.manifest_digest.to_string())
            .body(img.manifest.clone());
    }
    if p.ends_with(&format!("/blobs/{}", img.config_digest)) {
        return Resp::new(200).body(img.config.clone());
    }
    if p.ends_with(&format!("/blobs/{}", img.layer_digest)) {
        return Resp::new(200).body(img.layer.clone());
    }
    Resp::new(404).body(r#"{"errors":[{"code":"NOT_FOUND"}]}"#)
}

struct Env {
    _dir: tempfile::TempDir,
    store: ContentStore,
    opts: PullOptions<'static>,
}

fn env() -> Env {
    let dir = tempdir("berth-registry-bad-");
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    let opts = PullOptions {
        registry: RegistryOptions {
            plain_http: true,
            auth_file: Some(dir.path().join("none.json")),
            // Transient failures are retried (quickly): the faults below still fail clearly.
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: std::time::Duration::from_millis(5),
                max_delay: std::time::Duration::from_millis(50),
            },
            ..RegistryOptions::default()
        },
        ..PullOptions::default()
    };
    Env {
        _dir: dir,
        store,
        opts,
    }
}

/// Pulls `name` expecting failure; checks that no name was recorded and nothing unverified
/// is in the store.
fn pull_fails(e: &Env, name: &str, img: &Image) -> registry::Error {
    let err = registry::pull(&e.store, name, &e.opts).unwrap_err();
    assert!(e.store.images().list(&[]).unwrap().is_empty(), "{err}");
    assert!(!e.store.exists(&img.layer_digest) || e.store.verify().unwrap().corrupt.is_empty());
    let v = e.store.verify().unwrap();
    assert!(v.corrupt.is_empty(), "{v:?}");
    assert!(!err.to_string().is_empty());
    err
}

fn with_fault(
    fault: impl Fn(&Image, &Req) -> Option<Resp> + Send + Sync + 'static,
) -> (FakeServer, Arc<Image>) {
    let img = Arc::new(image());
    let i = img.clone();
    let server = FakeServer::start(move |req| fault(&i, req).unwrap_or_else(|| serve(&i, req)));
    (server, img)
}

#[test]
fn well_behaved_fake_registry_pulls() {
    let (server, img) = with_fault(|_, _| None);
    let e = env();
    let name = format!("{}/x/y:t", server.host());
    let report = registry::pull(&e.store, &name, &e.opts).unwrap();
    assert_eq!(report.target.digest, img.manifest_digest);
    assert!(e.store.exists(&img.layer_digest));
    let accept = server.requests()[0].header("accept").unwrap().to_owned();
    for mt in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] {
        assert!(accept.contains(mt), "{accept}");
    }
}

#[test]
fn not_found() {
    let (server, img) = with_fault(|_, r| r.path.contains("/manifests/").then(|| Resp::new(404)));
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // Not transient: asked once.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unauthorized_without_and_with_wrong_credentials() {
    let (server, img) = with_fault(|_, r| {
        (r.header("authorization") != Some("Basic dTpyaWdodA=="))
            .then(|| Resp::new(401).header("WWW-Authenticate", "Basic realm=\"fake\""))
    });
    let mut e = env();
    let name = format!("{}/x/y:t", server.host());
    let err = pull_fails(&e, &name, &img);
    assert!(matches!(err, registry::Error::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("no credentials")
            || err.to_string().contains("none are configured"),
        "{err}"
    );
    // A 401 is not retried: one request, nothing to answer it with.
    assert_eq!(server.requests().len(), 1);
    e.opts.registry.credentials = Some(Credentials {
        username: "u".into(),
        password: "wrong".into(),
    });
    let err = pull_fails(&e, &name, &img);
    assert!(matches!(err, registry::Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("rejected"), "{err}");
    // Anonymous, then once with the credentials: no retry after the rejection.
    assert_eq!(server.requests().len(), 3);
    // The right ones work.
    e.opts.registry.credentials = Some(Credentials {
        username: "u".into(),
        password: "right".into(),
    });
    registry::pull(&e.store, &name, &e.opts).unwrap();
}

#[test]
fn wrong_layer_digest_is_not_stored() {
    let (server, img) = with_fault(|img, r| {
        r.path
            .ends_with(&format!("/blobs/{}", img.layer_digest))
            .then(|| {
                let mut other = img.layer.clone();
                other[1000] ^= 0xff;
                Resp::new(200).body(other)
            })
    });
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert!(
        matches!(err, registry::Error::DigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(!err.is_transient());
    assert!(!e.store.exists(&img.layer_digest));
    // Not retried.
    let layer_path = format!("/blobs/{}", img.layer_digest);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(&layer_path))
            .count(),
        1
    );
    // The bad bytes are not kept for a resume either.
    assert!(
        e.store
            .status(&format!("pull-{}", img.layer_digest))
            .is_err()
    );
}

#[test]
fn wrong_manifest_digest() {
    let (server, img) = with_fault(|img, r| {
        r.path.contains("/manifests/").then(|| {
            let mut m = img.manifest.clone();
            m.push(b' ');
            Resp::new(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(m)
        })
    });
    let e = env();
    let name = format!("{}/x/y@{}", server.host(), img.manifest_digest);
    let err = pull_fails(&e, &name, &img);
    assert!(
        matches!(err, registry::Error::DigestMismatch { .. }),
        "{err}"
    );
    // By tag, a lying Docker-Content-Digest is caught too.
    let (server2, img2) = with_fault(|img, r| {
        r.path.contains("/manifests/").then(|| {
            Resp::new(200)
                .header("Docker-Content-Digest", &img.config_digest.to_string())
                .body(img.manifest.clone())
        })
    });
    let err = pull_fails(&env(), &format!("{}/x/y:t", server2.host()), &img2);
    assert!(
        matches!(err, registry::Error::DigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn truncated_layer_keeps_a_resumable_ingest_only() {
    let (server, img) = with_fault(|img, r| {
        r.path
            .ends_with(&format!("/blobs/{}", img.layer_digest))
            .then(|| {
                let mut resp = Resp::new(200).body(img.layer.clone());
                resp.cut_at = Some(100_000);
                resp
            })
    });
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert!(matches!(err, registry::Error::Truncated { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    // Retried up to the policy's attempts, each from what the ingest held (this server
    // ignores Range, so each attempt restarted it).
    let layer_path = format!("/blobs/{}", img.layer_digest);
    let layer_gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer_path))
        .collect();
    assert_eq!(layer_gets.len(), 3);
    assert!(layer_gets[0].header("range").is_none());
    assert!(layer_gets[1].header("range").unwrap().starts_with("bytes="));
    assert!(!e.store.exists(&img.layer_digest));
    let st = e
        .store
        .status(&format!("pull-{}", img.layer_digest))
        .unwrap();
    assert!(st.offset > 0 && st.offset <= 100_000, "{}", st.offset);
}

#[test]
fn content_length_that_lies() {
    // Longer than the descriptor says.
    let (server, img) = with_fault(|img, r| {
        r.path
            .ends_with(&format!("/blobs/{}", img.layer_digest))
            .then(|| {
                let mut resp = Resp::new(200).body(img.layer.clone());
                resp.length = Some(img.layer.len() as u64 + 4096);
                resp
            })
    });
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert!(err.to_string().contains("Content-Length"), "{err}");
    assert!(!e.store.exists(&img.layer_digest));
    // Shorter, on a document.
    let (server, img) = with_fault(|img, r| {
        r.path
            .ends_with(&format!("/blobs/{}", img.config_digest))
            .then(|| {
                let mut resp = Resp::new(200).body(img.config.clone());
                resp.length = Some(img.config.len() as u64 - 5);
                resp
            })
    });
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert!(
        matches!(
            err,
            registry::Error::Truncated { .. } | registry::Error::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(!e.store.exists(&img.config_digest));
}

#[test]
fn redirect_loops() {
    let (server, img) = with_fault(|img, r| {
        if r.path.ends_with(&format!("/blobs/{}", img.layer_digest)) || r.path == "/loop/b" {
            return Some(Resp::new(302).header("Location", "/loop/a"));
        }
        (r.path == "/loop/a").then(|| Resp::new(302).header("Location", "/loop/b"))
    });
    let e = env();
    let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
    assert!(
        matches!(err, registry::Error::TooManyRedirects { .. }),
        "{err}"
    );
    // An endless chain (no loop) is bounded too.
    let (server, img) = with_fault(|_, r| {
        r.path
            .contains("/blobs/")
            .then(|| Resp::new(307).header("Location", &format!("{}x", r.path)))
    });
    let err = pull_fails(&env(), &format!("{}/x/y:t", server.host()), &img);
    assert!(
        matches!(err, registry::Error::TooManyRedirects { .. }),
        "{err}"
    );
    assert!(server.requests().len() < 20);
}

#[test]
fn oversized_manifests() {
    for declared in [true, false] {
        let (server, img) = with_fault(move |_, r| {
            r.path.contains("/manifests/").then(|| {
                let mut resp = Resp::new(200)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(vec![b' '; 5 << 20]);
                resp.no_length = !declared;
                resp
            })
        });
        let e = env();
        let err = pull_fails(&e, &format!("{}/x/y:t", server.host()), &img);
        assert!(matches!(err, registry::Error::TooLarge { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn redirects_to_another_host_carry_no_credentials() {
    let img = Arc::new(image());
    let i = img.clone();
    let blob_host = FakeServer::start(move |req| serve(&i, req));
    let blob_port = blob_host.port;
    let i = img.clone();
    let server = FakeServer::start(move |req| {
        if req.header("authorization") != Some("Basic dTpyaWdodA==") {
            return Resp::new(401).header("WWW-Authenticate", "Basic realm=\"fake\"");
        }
        if req.path.ends_with(&format!("/blobs/{}", i.layer_digest)) {
            return Resp::new(307).header(
                "Location",
                &format!(
                    "http://127.0.0.1:{blob_port}/storage/blobs/{}",
                    i.layer_digest
                ),
            );
        }
        serve(&i, req)
    });
    let mut e = env();
    e.opts.registry.credentials = Some(Credentials {
        username: "u".into(),
        password: "right".into(),
    });
    registry::pull(&e.store, &format!("{}/x/y:t", server.host()), &e.opts).unwrap();
    assert!(e.store.exists(&img.layer_digest));
    let seen = blob_host.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.header("authorization").is_none()),
        "{seen:?}"
    );
}

#[test]
fn index_platform_selection() {
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let host = Arc::new(image_for(host_arch(), 0));
    let other = Arc::new(image_for(other_arch, 7));
    let entry = |img: &Image, arch: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            img.manifest_digest,
            img.manifest.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        entry(&other, other_arch),
        entry(&host, host_arch())
    )
    .into_bytes();
    let index_digest = Digest::sha256(&index);
    let (h, o, idx) = (host.clone(), other.clone(), index.clone());
    let server = FakeServer::start(move |req| {
        if req.path.ends_with("/manifests/multi") {
            return Resp::new(200)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(idx.clone());
        }
        for img in [&h, &o] {
            if req
                .path
                .ends_with(&format!("/manifests/{}", img.manifest_digest))
            {
                return Resp::new(200)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(img.manifest.clone());
            }
            if req.path.ends_with(&format!("/blobs/{}", img.config_digest)) {
                return Resp::new(200).body(img.config.clone());
            }
            if req.path.ends_with(&format!("/blobs/{}", img.layer_digest)) {
                return Resp::new(200).body(img.layer.clone());
            }
        }
        Resp::new(404)
    });
    let name = format!("{}/multi/arch:multi", server.host());

    // The host's platform: its manifest becomes the target; the other's blobs stay away.
    let e = env();
    let r = registry::pull(&e.store, &name, &e.opts).unwrap();
    assert_eq!(r.target.digest, host.manifest_digest);
    assert!(e.store.exists(&host.layer_digest));
    assert!(!e.store.exists(&other.layer_digest));

    // One named platform.
    let mut e = env();
    e.opts.platform = registry::PlatformChoice::Only(
        berth_oci::Platform::parse(&format!("linux/{other_arch}")).unwrap(),
    );
    let r = registry::pull(&e.store, &name, &e.opts).unwrap();
    assert_eq!(r.target.digest, other.manifest_digest);
    assert!(!e.store.exists(&host.layer_digest));

    // All: the index is the target and every child is stored.
    let mut e = env();
    e.opts.platform = registry::PlatformChoice::All;
    let r = registry::pull(&e.store, &name, &e.opts).unwrap();
    assert_eq!(r.target.digest, index_digest);
    for img in [&host, &other] {
        assert!(e.store.exists(&img.manifest_digest));
        assert!(e.store.exists(&img.layer_digest));
    }

    // A platform the index lacks.
    let mut e = env();
    e.opts.platform =
        registry::PlatformChoice::Only(berth_oci::Platform::parse("linux/s390x").unwrap());
    let err = registry::pull(&e.store, &name, &e.opts).unwrap_err();
    assert!(
        matches!(err, registry::Error::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(e.store.images().list(&[]).unwrap().is_empty());
}
