//! containerd `hosts.toml` per-host request settings against a real `docker-registry` behind
//! recording proxies: `[header]` tables (the upstream's at the top level, a mirror's in its
//! `[host."…"]` table) arrive on manifest and blob requests, a request's own headers and the
//! auth flow's `Authorization` replace configured ones, a configured `Authorization` alone
//! authenticates; `dial_timeout` bounds a connect to a host that never completes one, and a
//! mirror that cannot be reached in time hands over to the upstream.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::path::Path;

use berth_image::ErrorKind;
use berth_image::registry::{self, Credentials, PullOptions, RegistryOptions, RetryPolicy};
use registry_support::setup::{busybox_registry, open_store, pull_with};
use registry_support::{Blackhole, FakeServer, Req, forward, forward_auth, tempdir};

fn hosts_toml(dir: &Path, host: &str, text: &str) {
    let d = dir.join(host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("hosts.toml"), text).unwrap();
}

fn opts(hosts_dir: &Path) -> PullOptions<'static> {
    pull_with(RegistryOptions {
        hosts_dir: Some(hosts_dir.to_path_buf()),
        auth_file: Some(hosts_dir.join("no-config.json")),
        retry: RetryPolicy::none(),
        ..RegistryOptions::default()
    })
}

/// Every value of header `name` on `req`.
fn values<'a>(req: &'a Req, name: &str) -> Vec<&'a str> {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn is_manifest(r: &Req) -> bool {
    r.path.contains("/manifests/")
}

fn is_blob(r: &Req) -> bool {
    r.path.contains("/blobs/sha256:")
}

#[test]
fn configured_headers_reach_manifest_and_blob_requests_per_host() {
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let port = reg.port;
    let upstream = FakeServer::start(move |req| forward(port, req));
    let mirror = FakeServer::start(move |req| forward(port, req));
    let dir = tempdir("berth-hosts-settings-");
    let name = format!("{}/lib/busybox:latest", upstream.host());

    // The mirror resolves and pulls: every request it gets carries its own header, none of
    // the upstream's (top-level) ones.
    hosts_toml(
        dir.path(),
        &upstream.host(),
        &format!(
            r#"server = "http://{up}"
[header]
  x-berth-test = "top"
  x-upstream-only = ["one", "two"]
  accept = "text/plain"

[host."http://{mirror}"]
  capabilities = ["pull", "resolve"]
  [host."http://{mirror}".header]
    x-berth-test = "mirror"
"#,
            up = upstream.host(),
            mirror = mirror.host()
        ),
    );
    let store = open_store(dir.path(), "a");
    registry::pull(&store, &name, &opts(dir.path())).unwrap();
    assert!(upstream.requests().is_empty(), "the mirror served it all");
    let seen = mirror.requests();
    assert!(seen.iter().any(is_manifest) && seen.iter().any(is_blob));
    for r in &seen {
        assert_eq!(values(r, "x-berth-test"), vec!["mirror"], "{}", r.path);
        assert!(values(r, "x-upstream-only").is_empty(), "{}", r.path);
    }

    // Without the mirror, the upstream gets the top-level headers (a list as several lines);
    // the request's own Accept replaces the configured one.
    hosts_toml(
        dir.path(),
        &upstream.host(),
        &format!(
            "server = \"http://{}\"\n[header]\n  x-berth-test = \"top\"\n  x-upstream-only = [\"one\", \"two\"]\n  accept = \"text/plain\"\n",
            upstream.host()
        ),
    );
    let store = open_store(dir.path(), "b");
    registry::pull(&store, &name, &opts(dir.path())).unwrap();
    let seen = upstream.requests();
    assert!(seen.iter().any(is_manifest) && seen.iter().any(is_blob));
    for r in &seen {
        assert_eq!(values(r, "x-berth-test"), vec!["top"], "{}", r.path);
        assert_eq!(
            values(r, "x-upstream-only"),
            vec!["one", "two"],
            "{}",
            r.path
        );
        if is_manifest(r) {
            let accept = values(r, "accept");
            assert_eq!(accept.len(), 1, "{accept:?}");
            assert!(accept[0].contains("application/vnd.oci.image.index.v1+json"));
        }
    }
}

#[test]
fn a_configured_authorization_authenticates_until_the_flow_replaces_it() {
    let user = ("hdr-user", "hdr-pw");
    let Some(reg) = busybox_registry(Some(user), "lib/busybox:latest") else {
        return;
    };
    let port = reg.port;
    let proxy = FakeServer::start(move |req| forward_auth(port, req));
    let dir = tempdir("berth-hosts-settings-");
    let name = format!("{}/lib/busybox:latest", proxy.host());
    let basic = |u: &str, p: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        format!("Basic {encoded}")
    };
    let good = basic(user.0, user.1);

    // The configured header alone (no credentials anywhere): every request carries it and
    // the registry never has to challenge.
    hosts_toml(
        dir.path(),
        &proxy.host(),
        &format!(
            "server = \"http://{}\"\n[header]\n  authorization = \"{good}\"\n",
            proxy.host()
        ),
    );
    let store = open_store(dir.path(), "a");
    registry::pull(&store, &name, &opts(dir.path())).unwrap();
    let seen = proxy.requests();
    assert!(seen.iter().any(is_blob));
    for r in &seen {
        assert_eq!(
            values(r, "authorization"),
            vec![good.as_str()],
            "{}",
            r.path
        );
    }

    // A wrong configured header and the right credentials: the first request is refused,
    // the flow answers the challenge, and from then on only the flow's value is sent.
    let before = proxy.requests().len();
    let wrong = basic(user.0, "wrong");
    hosts_toml(
        dir.path(),
        &proxy.host(),
        &format!(
            "server = \"http://{}\"\n[header]\n  authorization = \"{wrong}\"\n",
            proxy.host()
        ),
    );
    let mut o = opts(dir.path());
    o.registry.credentials = Some(Credentials {
        username: user.0.into(),
        password: user.1.into(),
    });
    let store = open_store(dir.path(), "b");
    registry::pull(&store, &name, &o).unwrap();
    let seen = proxy.requests().split_off(before);
    assert_eq!(values(&seen[0], "authorization"), vec![wrong.as_str()]);
    assert!(seen.iter().any(is_blob));
    for r in &seen[1..] {
        assert_eq!(
            values(r, "authorization"),
            vec![good.as_str()],
            "{}",
            r.path
        );
    }
}

#[test]
fn dial_timeout_bounds_a_connect_that_never_completes() {
    let hole = Blackhole::start();
    let dir = tempdir("berth-hosts-settings-");
    // The upstream itself never accepts: the pull fails with the connect timeout, not after
    // the 30 s default (or the kernel's minutes of SYN retries).
    hosts_toml(
        dir.path(),
        &hole.host(),
        &format!(
            "server = \"http://{}\"\ndial_timeout = \"200ms\"\n",
            hole.host()
        ),
    );
    let store = open_store(dir.path(), "x");
    let name = format!("{}/lib/busybox:latest", hole.host());
    let e = registry::pull(&store, &name, &opts(dir.path())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(matches!(e, registry::Error::Transport { .. }), "{e:?}");
    assert!(
        e.to_string().contains("connect timed out after 200ms"),
        "{e}"
    );
    assert!(store.images().list(&[]).unwrap().is_empty());

    // A mirror that never accepts, bounded by its own dial_timeout, hands over to the
    // upstream, which serves the pull.
    let Some(reg) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    hosts_toml(
        dir.path(),
        &reg.host(),
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"150ms\"\n",
            reg.host(),
            hole.host()
        ),
    );
    let store = open_store(dir.path(), "a");
    let name = format!("{}/lib/busybox:latest", reg.host());
    let report = registry::pull(&store, &name, &opts(dir.path())).unwrap();
    assert!(report.blobs >= 3, "{report:?}");
    assert!(store.verify().unwrap().corrupt.is_empty());
}

#[test]
fn configured_headers_reach_every_push_request_and_the_login_check() {
    let (Some(reg), Some(busybox)) = (
        busybox_registry(None, "lib/busybox:latest"),
        registry_support::fixture("busybox.oci.tar"),
    ) else {
        return;
    };
    let port = reg.port;
    let proxy = FakeServer::start(move |req| forward(port, req));
    let dir = tempdir("berth-hosts-settings-");
    hosts_toml(
        dir.path(),
        &proxy.host(),
        &format!(
            "server = \"http://{}\"\n[header]\n  x-berth-push = \"yes\"\n",
            proxy.host()
        ),
    );
    let src = open_store(dir.path(), "src");
    registry_support::setup::import_as(&src, &busybox, "berth.test/busybox:src");
    let push = registry::PushOptions {
        registry: opts(dir.path()).registry,
        // Chunked: POST, PATCH and PUT all go through the proxy.
        chunk_size: 256 << 10,
        ..registry::PushOptions::default()
    };
    let target = format!("{}/pushed/busybox:v1", proxy.host());
    let report = registry::push(&src, "berth.test/busybox:src", Some(&target), &push).unwrap();
    assert!(report.chunked >= 1, "{report:?}");
    registry::check_login(&proxy.host(), &push.registry).unwrap();
    let seen = proxy.requests();
    for method in ["HEAD", "POST", "PATCH", "PUT", "GET"] {
        assert!(seen.iter().any(|r| r.method == method), "no {method}");
    }
    for r in &seen {
        assert_eq!(
            values(r, "x-berth-push"),
            vec!["yes"],
            "{} {}",
            r.method,
            r.path
        );
    }
}
