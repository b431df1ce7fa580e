//! containerd's `hosts.toml` (`RegistryOptions::hosts_dir`, `<dir>/<host>/hosts.toml`)
//! against real `docker-registry` processes: a mirror that has the image serves the pull and
//! the upstream is never contacted; failing mirrors (one answering 404, one failing blobs
//! after resolving) hand over to the upstream; a mirror failing one blob (404, 500 after its
//! retries, a body cut short) hands that blob alone to the upstream (resuming with `Range`)
//! while every other request stays on the mirror; a pull-only mirror serving blobs while the
//! upstream resolves the tag; a mirror under an overridden path; a TLS
//! registry with an unknown CA reached with `skip_verify`, then with the `ca` file, and
//! mutual TLS with the `client` pair the file names; mirrors get the auth file's credentials
//! for their own host, never the upstream's; requests to a mirror carry containerd's `ns`
//! query parameter (the reference's registry), requests to the upstream do not.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::path::{Path, PathBuf};

use berth_image::ErrorKind;
use berth_image::content::ContentStore;
use berth_image::registry::{self, PullOptions, RegistryOptions, RetryPolicy};
use registry_support::setup::{busybox_registry, open_store, pull_with, seeded};
use registry_support::{
    FakeServer, Registry, Resp, fixture, forward, make_client_cert, make_pki, tempdir,
};

/// Writes `<dir>/<host>/hosts.toml`.
fn hosts_toml(dir: &Path, host: &str, text: &str) -> PathBuf {
    let d = dir.join(host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("hosts.toml"), text).unwrap();
    d
}

fn opts(hosts_dir: &Path) -> PullOptions<'static> {
    pull_with(RegistryOptions {
        hosts_dir: Some(hosts_dir.to_path_buf()),
        auth_file: Some(hosts_dir.join("no-config.json")),
        retry: RetryPolicy::none(),
        ..RegistryOptions::default()
    })
}

fn pull_ok(dir: &Path, sub: &str, name: &str, o: &PullOptions<'_>) -> ContentStore {
    let store = open_store(dir, sub);
    let report = registry::pull(&store, name, o).unwrap();
    assert_eq!(report.name, name);
    assert!(report.blobs >= 3, "{report:?}");
    assert!(store.verify().unwrap().corrupt.is_empty());
    store
}

#[test]
fn a_mirror_with_the_image_serves_the_pull_without_the_upstream() {
    let Some(mirror) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    // The upstream answers nothing useful and records whether it was asked at all.
    let upstream = FakeServer::start(|_| Resp::new(500).body("upstream must not be used"));
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &upstream.host(),
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            mirror.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", upstream.host());
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
    assert!(
        upstream.requests().is_empty(),
        "the upstream was contacted: {:?}",
        upstream.requests()
    );
}

#[test]
fn failing_mirrors_fall_back_to_the_upstream() {
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let upstream = reg.port;
    // Mirror 1 resolves (forwarding manifests to the registry) but fails every blob; mirror 2
    // has nothing (404).
    let resolving = FakeServer::start(move |req| {
        if req.path.contains("/blobs/") {
            Resp::new(500).body("disk on fire")
        } else {
            forward(upstream, req)
        }
    });
    let empty =
        FakeServer::start(|_| Resp::new(404).body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#));
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            reg.host(),
            resolving.host(),
            empty.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", reg.host());
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
    // Mirror 1 resolved and was asked for a blob; mirror 2 was asked for blobs after it.
    let first = resolving.requests();
    assert!(first.iter().any(|r| r.path.contains("/manifests/")));
    assert!(first.iter().any(|r| r.path.contains("/blobs/")));
    assert!(empty.requests().iter().any(|r| r.path.contains("/blobs/")));

    // When every endpoint fails, the error is the last one's (the upstream's), here 404.
    let store = open_store(dir.path(), "b");
    let missing = format!("{}/lib/nothing:latest", reg.host());
    let e = registry::pull(&store, &missing, &opts(dir.path())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn a_pull_only_mirror_serves_blobs_while_the_upstream_resolves_the_tag() {
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let upstream = reg.port;
    // The mirror forwards to the same storage; it may pull (by digest) but not resolve tags.
    let mirror = FakeServer::start(move |req| forward(upstream, req));
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            reg.host(),
            mirror.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", reg.host());
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
    let asked = mirror.requests();
    assert!(
        !asked
            .iter()
            .any(|r| r.route().ends_with("/manifests/latest")),
        "the pull-only mirror was asked to resolve the tag"
    );
    assert!(asked.iter().any(|r| r.path.contains("/blobs/sha256:")));
}

#[test]
fn a_mirror_gets_its_own_credentials_never_the_upstreams() {
    let Some(mirror) = busybox_registry(Some(("mirror-user", "m1rror-pw")), "lib/busybox:latest")
    else {
        return;
    };
    let upstream = FakeServer::start(|_| Resp::new(503));
    // A first mirror asking for basic credentials, recording what it is sent.
    let asking =
        FakeServer::start(|_| Resp::new(401).header("WWW-Authenticate", "Basic realm=\"asking\""));
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &upstream.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            asking.host(),
            mirror.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", upstream.host());
    // Explicit credentials are the upstream's: no mirror is sent them, both refuse, and the
    // upstream's 503 is the answer.
    let mut o = opts(dir.path());
    o.registry.credentials = Some(registry::Credentials {
        username: "upstream-user".into(),
        password: "upstream-secret".into(),
    });
    let store = open_store(dir.path(), "x");
    let e = registry::pull(&store, &name, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "the upstream's 503: {e}");
    assert!(!asking.requests().is_empty());
    assert!(!upstream.requests().is_empty());
    let no_auth = |s: &FakeServer| {
        s.requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    };
    assert!(no_auth(&asking), "credentials were sent to a mirror");
    // The auth file's entry for the mirror's own host is used for the mirror.
    registry::save_credentials(
        &dir.path().join("no-config.json"),
        &mirror.host(),
        &registry::Credentials {
            username: "mirror-user".into(),
            password: "m1rror-pw".into(),
        },
    )
    .unwrap();
    pull_ok(dir.path(), "a", &name, &o);
    assert!(
        no_auth(&asking),
        "the other mirror's credentials leaked to this one"
    );
}

#[test]
fn a_mirror_under_an_overridden_path() {
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let upstream = reg.port;
    // The mirror serves the API under /cache/api (no /v2 of its own): strip it and forward.
    let mirror = FakeServer::start(move |req| match req.path.strip_prefix("/cache/api") {
        Some(rest) => {
            let mut r = req.clone();
            r.path = format!("/v2{rest}");
            forward(upstream, &r)
        }
        None => Resp::new(404),
    });
    let dead = FakeServer::start(|_| Resp::new(500));
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &dead.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}/cache/api\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
            dead.host(),
            mirror.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", dead.host());
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
    let asked = mirror.requests();
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|r| r.path.starts_with("/cache/api/lib/busybox/")),
        "{:?}",
        asked.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(dead.requests().is_empty());
}

#[test]
fn skip_verify_then_ca_for_a_tls_registry_with_an_unknown_ca() {
    let pki = tempdir("berth-hosts-pki-");
    let Some((ca, crt, key)) = make_pki(pki.path(), "hosts", "IP:127.0.0.1") else {
        return;
    };
    let Some((reg, _)) = seeded(
        Registry::start_tls(None, &crt, &key),
        "busybox.oci.tar",
        "tls/busybox:latest",
    ) else {
        return;
    };
    let dir = tempdir("berth-hosts-test-");
    let name = format!("{}/tls/busybox:latest", reg.host());
    let server = format!("server = \"https://{}\"\n", reg.host());

    // Unknown CA: refused.
    let host_dir = hosts_toml(dir.path(), &reg.host(), &server);
    let store = open_store(dir.path(), "x");
    let e = registry::pull(&store, &name, &opts(dir.path())).unwrap_err();
    assert!(matches!(e, registry::Error::Tls { .. }), "{e}");
    let e = registry::check_login(&reg.host(), &opts(dir.path()).registry).unwrap_err();
    assert!(matches!(e, registry::Error::Tls { .. }), "{e}");

    // skip_verify: no verification, the pull works.
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!("{server}skip_verify = true\n"),
    );
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
    // The login check reaches the upstream as hosts.toml describes it too.
    registry::check_login(&reg.host(), &opts(dir.path()).registry).unwrap();

    // The CA named by `ca` (relative to the host's directory) instead.
    std::fs::copy(&ca, host_dir.join("registry-ca.pem")).unwrap();
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!("{server}ca = \"registry-ca.pem\"\n"),
    );
    pull_ok(dir.path(), "b", &name, &opts(dir.path()));
}

#[test]
fn mutual_tls_with_the_client_pair_hosts_toml_names() {
    let pki = tempdir("berth-hosts-pki-");
    let Some((ca, crt, key)) = make_pki(pki.path(), "mhosts", "IP:127.0.0.1") else {
        return;
    };
    let (Some(reg), Some(busybox)) = (
        Registry::start_mtls(&crt, &key, &ca),
        fixture("busybox.oci.tar"),
    ) else {
        return;
    };
    let (cert, ckey) = make_client_cert(pki.path(), "mhosts", "client");
    // skopeo needs the client certificate too.
    reg.seed_mtls(&busybox, "m/busybox:latest", &ca, &cert, &ckey);
    let dir = tempdir("berth-hosts-test-");
    let name = format!("{}/m/busybox:latest", reg.host());
    let ca_s = ca.display().to_string();
    // Without the client pair: refused by the registry.
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!("server = \"https://{}\"\nca = \"{ca_s}\"\n", reg.host()),
    );
    let store = open_store(dir.path(), "x");
    assert!(registry::pull(&store, &name, &opts(dir.path())).is_err());
    // With it.
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!(
            "server = \"https://{}\"\nca = \"{ca_s}\"\nclient = [[\"{}\", \"{}\"]]\n",
            reg.host(),
            cert.display(),
            ckey.display()
        ),
    );
    pull_ok(dir.path(), "a", &name, &opts(dir.path()));
}

/// The Debian fixture (config and 3 layers) in a registry, with its layers (digest, size)
/// learnt by a direct pull, smallest first.
fn debian_registry(dir: &Path) -> Option<(Registry, Vec<(berth_oci::Digest, u64)>)> {
    let (reg, _) = seeded(
        Registry::start(None),
        "debian-gzip.oci.tar",
        "lib/debian:bookworm",
    )?;
    let scratch = open_store(dir, "scratch");
    let name = format!("{}/lib/debian:bookworm", reg.host());
    let mut direct = opts(dir);
    direct.registry.plain_http = true;
    registry::pull(&scratch, &name, &direct).unwrap();
    let image = scratch.images().get(&name).unwrap();
    let resolved = berth_image::unpack::resolve(&scratch, &image.target, None).unwrap();
    let mut layers: Vec<_> = resolved
        .layers
        .iter()
        .map(|(d, _)| (d.digest.clone(), d.size))
        .collect();
    layers.sort_by_key(|(_, n)| *n);
    assert_eq!(layers.len(), 3);
    Some((reg, layers))
}

/// Blob GETs a server received, by digest (`sha256:…`), with their `Range` header.
fn blob_gets(s: &FakeServer) -> Vec<(String, Option<String>)> {
    s.requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            let d = r.route().split("/blobs/").nth(1)?;
            Some((d.to_owned(), r.header("range").map(str::to_owned)))
        })
        .collect()
}

#[test]
fn a_mirror_failing_one_blob_hands_only_that_blob_to_the_upstream() {
    let dir = tempdir("berth-hosts-test-");
    let Some((reg, layers)) = debian_registry(dir.path()) else {
        return;
    };
    let port = reg.port;
    let failing = layers[0].0.to_string();
    let cut = layers[1].0.to_string();
    let upstream = FakeServer::start(move |req| forward(port, req));
    // How the mirror fails the chosen blob: 404, 500, wrong bytes (1), or another blob's
    // body cut in the middle (0).
    let mode = std::sync::Arc::new(std::sync::Mutex::new(404u16));
    let m = mode.clone();
    let (f, c) = (failing.clone(), cut.clone());
    let mirror = FakeServer::start(move |req| {
        let mode = *m.lock().unwrap();
        if req.route().ends_with(&f) && mode == 1 {
            // Wrong bytes, right length.
            let mut resp = forward(port, req);
            resp.body[10] ^= 0x55;
            return resp;
        }
        if req.route().ends_with(&f) && mode > 1 {
            return Resp::new(mode).body("not here");
        }
        let mut resp = forward(port, req);
        if mode == 0 && req.route().ends_with(&c) && req.header("range").is_none() {
            resp.cut_at = Some(resp.body.len() / 2);
        }
        resp
    });
    hosts_toml(
        dir.path(),
        &upstream.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            mirror.host()
        ),
    );
    let name = format!("{}/lib/debian:bookworm", upstream.host());

    // 404 and 500 (the latter retried on the mirror within its budget first): that blob
    // alone comes from the upstream, every other request from the mirror.
    for (round, (status, attempts)) in [(404u16, 1u32), (500, 2)].into_iter().enumerate() {
        *mode.lock().unwrap() = status;
        let (seen_m, seen_u) = (blob_gets(&mirror).len(), upstream.requests().len());
        let mut o = opts(dir.path());
        o.registry.retry = RetryPolicy {
            max_attempts: attempts,
            base_delay: std::time::Duration::from_millis(10),
            max_delay: std::time::Duration::from_millis(50),
        };
        let store = pull_ok(dir.path(), &format!("r{round}"), &name, &o);
        registry_support::setup::assert_complete(&store, &name);
        let at_upstream = upstream.requests().split_off(seen_u);
        let mirror_gets = blob_gets(&mirror).split_off(seen_m);
        assert_eq!(
            at_upstream
                .iter()
                .map(|r| r.route().rsplit('/').next().unwrap_or_default().to_owned())
                .collect::<Vec<_>>(),
            vec![failing.clone()],
            "{status}: only the failing blob goes to the upstream"
        );
        assert_eq!(
            mirror_gets.iter().filter(|(d, _)| *d == failing).count(),
            attempts as usize,
            "{status}: the mirror is tried (and retried) for the failing blob first"
        );
        for (d, _) in &layers[1..] {
            assert!(
                mirror_gets.iter().any(|(g, _)| *g == d.to_string()),
                "{status}: layer {d} came from the mirror"
            );
        }
        assert_eq!(mirror_gets.len(), 3 + attempts as usize, "{mirror_gets:?}");
    }

    // Wrong bytes from the mirror: discarded, and the upstream serves the blob whole.
    *mode.lock().unwrap() = 1;
    let (seen_m, seen_u) = (blob_gets(&mirror).len(), blob_gets(&upstream).len());
    let store = pull_ok(dir.path(), "corrupt", &name, &opts(dir.path()));
    registry_support::setup::assert_complete(&store, &name);
    let at_upstream = blob_gets(&upstream).split_off(seen_u);
    assert_eq!(at_upstream, vec![(failing.clone(), None)]);
    let mirror_gets = blob_gets(&mirror).split_off(seen_m);
    assert_eq!(mirror_gets.len(), 4, "{mirror_gets:?}");

    // A body the mirror cuts in the middle (no retry): the upstream resumes that layer with
    // Range from where the mirror stopped; the failing blob is served again by the mirror.
    *mode.lock().unwrap() = 0;
    let seen_u = upstream.requests().len();
    let store = open_store(dir.path(), "cut");
    let report = registry::pull(&store, &name, &opts(dir.path())).unwrap();
    registry_support::setup::assert_complete(&store, &name);
    let at_upstream = upstream.requests().split_off(seen_u);
    assert_eq!(at_upstream.len(), 1, "{at_upstream:?}");
    let range = at_upstream[0].header("range").unwrap();
    assert!(at_upstream[0].route().ends_with(&cut));
    let half = layers[1].1 / 2;
    assert_eq!(range, format!("bytes={half}-"));
    assert!(
        report
            .resumed
            .iter()
            .any(|(d, off)| d.to_string() == cut && *off == half),
        "{report:?}"
    );

    // As containerd does, every request to the mirror names the registry of the reference
    // in `ns` (a pull-through cache serving several upstreams tells them apart by it); the
    // upstream itself gets no `ns`.
    let to_mirror = mirror.requests();
    assert!(!to_mirror.is_empty());
    for r in &to_mirror {
        assert_eq!(
            r.query_param("ns").as_deref(),
            Some(upstream.host().as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
    for r in upstream.requests() {
        assert_eq!(r.query_param("ns"), None, "{} {}", r.method, r.path);
    }
}

#[test]
fn an_unreachable_mirror_is_asked_once_per_pull() {
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    // A mirror that closes every connection without an answer (a transport failure).
    let dead = FakeServer::start(|_| Resp::dropped());
    let dir = tempdir("berth-hosts-test-");
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host(),
            dead.host()
        ),
    );
    let name = format!("{}/lib/busybox:latest", reg.host());
    let mut o = opts(dir.path());
    // Two attempts per request and host: the mirror is given its budget once (resolving),
    // then left alone for the config and the layer.
    o.registry.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(20),
    };
    pull_ok(dir.path(), "a", &name, &o);
    let asked = dead.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|r| r.route().ends_with("/manifests/latest"))
    );
}
