//! containerd's `hosts.toml` (`RegistryOptions::hosts_dir`, `<dir>/<host>/hosts.toml`)
//! against real `docker-registry` processes: a mirror that has the image serves the pull and
//! the upstream is never contacted; failing mirrors (one answering 404, one failing blobs
//! after resolving) hand over to the upstream; a pull-only mirror serving blobs while the
//! upstream resolves the tag; a mirror under an overridden path; a TLS
//! registry with an unknown CA reached with `skip_verify`, then with the `ca` file, and
//! mutual TLS with the `client` pair the file names; mirrors get the auth file's credentials
//! for their own host, never the upstream's.
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
        !asked.iter().any(|r| r.path.ends_with("/manifests/latest")),
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
