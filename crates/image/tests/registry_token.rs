//! The bearer flow against the registry's own token auth: `docker-registry` configured with
//! `auth: token` (realm, service, issuer, rootcertbundle) and a token server on loopback
//! (`registry_support::token`) issuing RS256 JWTs the registry verifies against its
//! `rootcertbundle`, honouring the requested scope per user, with basic login at the token
//! endpoint. Covers pull and push with credentials, a pull-only user refused push, anonymous
//! pull of a public repository, wrong passwords, tokens expiring in the middle of a pull
//! and of a chunked push (refreshed on 401 when the token server overstates their life), and
//! short-lived tokens refreshed before they expire, without a 401; `hosts.toml` headers sent
//! to the token realm, a configured `Authorization` not.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_image::ErrorKind;
use berth_image::content::ContentStore;
use berth_image::progress::ProgressEvent;
use berth_image::registry::{
    self, Credentials, PullOptions, PushOptions, RegistryOptions, RetryPolicy,
};
use registry_support::setup::{import_as, open_store, pull_with};
use registry_support::token::{Grant, TokenServer};
use registry_support::{FakeServer, Registry, counter, fixture, forward_auth, tempdir};

const ADMIN: (&str, &str) = ("admin", "adm1n-pw");
const READER: (&str, &str) = ("reader", "r3ader-pw");

/// A token server (admin: pull+push, reader: pull) and a registry trusting it, seeded with
/// busybox as `private/busybox:latest` and `public/busybox:latest`.
fn setup() -> Option<(TokenServer, Registry, std::path::PathBuf)> {
    let busybox = fixture("busybox.oci.tar")?;
    let tokens = TokenServer::start(&[
        (ADMIN.0, ADMIN.1, Grant::PullPush),
        (READER.0, READER.1, Grant::PullOnly),
    ])?;
    let reg = Registry::start_token(&tokens, ADMIN)?;
    reg.seed(&busybox, "private/busybox:latest");
    reg.seed(&busybox, "public/busybox:latest");
    Some((tokens, reg, busybox))
}

fn creds(c: (&str, &str)) -> Option<Credentials> {
    Some(Credentials {
        username: c.0.into(),
        password: c.1.into(),
    })
}

fn reg_opts(dir: &Path, c: Option<Credentials>) -> RegistryOptions {
    RegistryOptions {
        plain_http: true,
        // An auth file of this test alone (absent): only the explicit credentials count.
        auth_file: Some(dir.join("no-config.json")),
        credentials: c,
        retry: RetryPolicy::none(),
        ..RegistryOptions::default()
    }
}

fn pull_opts(dir: &Path, c: Option<Credentials>) -> PullOptions<'static> {
    pull_with(reg_opts(dir, c))
}

fn import_src(dir: &Path, busybox: &Path) -> ContentStore {
    let store = open_store(dir, "src");
    import_as(&store, busybox, "berth.test/busybox:src");
    store
}

#[test]
fn token_auth_pull_and_push_with_credentials() {
    let Some((tokens, reg, busybox)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    let name = format!("{}/private/busybox:latest", reg.host());

    // Pull with credentials: the registry's challenge sends us to the token server.
    let store = open_store(dir.path(), "a");
    let pulled = registry::pull(&store, &name, &pull_opts(dir.path(), creds(ADMIN))).unwrap();
    assert_eq!(pulled.name, name);
    assert!(store.verify().unwrap().corrupt.is_empty());
    let asked = tokens.server.requests();
    let token_req = asked
        .iter()
        .find(|r| r.path.starts_with("/token"))
        .expect("a token request");
    assert!(
        token_req
            .path
            .contains("scope=repository%3Aprivate%2Fbusybox%3Apull"),
        "{}",
        token_req.path
    );
    assert!(token_req.header("authorization").is_some());

    // Push with credentials (chunked), then pull back by digest.
    let src = import_src(dir.path(), &busybox);
    let target = format!("{}/private/copy:v1", reg.host());
    let opts = PushOptions {
        registry: reg_opts(dir.path(), creds(ADMIN)),
        chunk_size: 64 << 10,
        ..PushOptions::default()
    };
    let pushed = registry::push(&src, "berth.test/busybox:src", Some(&target), &opts).unwrap();
    assert!(pushed.uploaded >= 2, "{pushed:?}");
    let digest = pushed.digest.clone().unwrap();
    let back = open_store(dir.path(), "b");
    let by_digest = format!("{}/private/copy@{digest}", reg.host());
    let again = registry::pull(&back, &by_digest, &pull_opts(dir.path(), creds(READER))).unwrap();
    assert_eq!(again.target.digest, digest);

    // The login check (`GET /v2/`, no scope) works with good credentials and not bad ones.
    registry::check_login(&reg.host(), &reg_opts(dir.path(), creds(ADMIN))).unwrap();
    let e = registry::check_login(
        &reg.host(),
        &reg_opts(dir.path(), creds((ADMIN.0, "wrong"))),
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
}

#[test]
fn token_for_pull_only_cannot_push() {
    let Some((_tokens, reg, busybox)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    let src = import_src(dir.path(), &busybox);
    let target = format!("{}/private/readers-copy:v1", reg.host());
    let opts = PushOptions {
        registry: reg_opts(dir.path(), creds(READER)),
        ..PushOptions::default()
    };
    let e = registry::push(&src, "berth.test/busybox:src", Some(&target), &opts).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    let msg = e.to_string();
    assert!(
        msg.contains("insufficient_scope") && msg.contains("push"),
        "the error says the token lacks push: {msg}"
    );
    // Nothing landed: the admin cannot pull it.
    let store = open_store(dir.path(), "c");
    let e = registry::pull(&store, &target, &pull_opts(dir.path(), creds(ADMIN))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn anonymous_pull_of_a_public_repository_only() {
    let Some((tokens, reg, _busybox)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    let public = format!("{}/public/busybox:latest", reg.host());
    let store = open_store(dir.path(), "a");
    let seeding = tokens.server.requests().len();
    registry::pull(&store, &public, &pull_opts(dir.path(), None)).unwrap();
    // The pull's token requests (after the seeding's) carried no credentials.
    let ours = tokens.server.requests().split_off(seeding);
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|r| r.header("authorization").is_none()));

    // A private repository anonymously: the token grants nothing, a clear refusal.
    let private = format!("{}/private/busybox:latest", reg.host());
    let store = open_store(dir.path(), "b");
    let e = registry::pull(&store, &private, &pull_opts(dir.path(), None)).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("no credentials"), "{e}");

    // A wrong password is refused at the token endpoint.
    let e = registry::pull(
        &store,
        &private,
        &pull_opts(dir.path(), creds((READER.0, "nope"))),
    )
    .unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("token endpoint answered 401"), "{e}");
    assert!(store.images().list(&[]).unwrap().is_empty());
}

#[test]
fn expired_tokens_are_refreshed_during_pull_and_push() {
    let Some((tokens, reg, busybox)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    // Tokens usable for 2 s (the registry's leeway included), said to last 300 s: the client
    // trusts them and learns of their end from the registry's 401 (the fallback path).
    tokens.lifetime.store(2, Ordering::SeqCst);
    tokens.advertised.store(300, Ordering::SeqCst);

    // Pull: once the root manifest resolved, wait past the token's life; every later request
    // meets 401 invalid_token and must fetch a new one.
    let before = tokens.issued.load(Ordering::SeqCst);
    let slept = AtomicBool::new(false);
    let progress = |e: &ProgressEvent<'_>| {
        if e.finished && !slept.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(4));
        }
    };
    let store = open_store(dir.path(), "a");
    let name = format!("{}/private/busybox:latest", reg.host());
    let opts = PullOptions {
        registry: reg_opts(dir.path(), creds(READER)),
        progress: &progress,
        max_concurrent: 1,
        ..PullOptions::default()
    };
    registry::pull(&store, &name, &opts).unwrap();
    assert!(slept.load(Ordering::SeqCst));
    assert!(
        tokens.issued.load(Ordering::SeqCst) - before >= 2,
        "a second token was fetched after the first expired"
    );
    assert!(store.verify().unwrap().corrupt.is_empty());

    // Push in 64 KiB chunks: after the first chunk, wait past the token's life; the next
    // PATCH is refused and repeated with a fresh token, the upload goes on.
    let src = import_src(dir.path(), &busybox);
    let before = tokens.issued.load(Ordering::SeqCst);
    let slept = AtomicBool::new(false);
    let progress = |e: &ProgressEvent<'_>| {
        if !e.finished && e.done > 0 && !slept.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(4));
        }
    };
    let target = format!("{}/private/slow:v1", reg.host());
    let opts = PushOptions {
        registry: reg_opts(dir.path(), creds(ADMIN)),
        chunk_size: 64 << 10,
        progress: &progress,
        ..PushOptions::default()
    };
    let pushed = registry::push(&src, "berth.test/busybox:src", Some(&target), &opts).unwrap();
    assert!(slept.load(Ordering::SeqCst));
    assert!(pushed.chunked >= 1, "{pushed:?}");
    assert!(tokens.issued.load(Ordering::SeqCst) - before >= 2);
    let back = open_store(dir.path(), "b");
    tokens.lifetime.store(300, Ordering::SeqCst);
    let by_digest = format!("{}/private/slow@{}", reg.host(), pushed.digest.unwrap());
    registry::pull(&back, &by_digest, &pull_opts(dir.path(), creds(READER))).unwrap();
}

#[test]
fn cross_repository_mount_asks_the_token_for_both_repositories() {
    let Some((tokens, reg, busybox)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    let src = import_src(dir.path(), &busybox);
    let mut opts = PushOptions {
        registry: reg_opts(dir.path(), creds(ADMIN)),
        ..PushOptions::default()
    };
    let first = format!("{}/private/origin:v1", reg.host());
    let pushed = registry::push(&src, "berth.test/busybox:src", Some(&first), &opts).unwrap();
    assert!(pushed.uploaded >= 2, "{pushed:?}");

    // Into another repository, mounting from the first: the token is asked for push on the
    // target and pull on the source, and the registry mounts instead of receiving bytes.
    opts.mount_from = Some("private/origin".into());
    let seen = tokens.server.requests().len();
    let second = format!("{}/private/mounted:v1", reg.host());
    let mounted = registry::push(&src, "berth.test/busybox:src", Some(&second), &opts).unwrap();
    assert_eq!(mounted.uploaded, 0, "{mounted:?}");
    assert!(mounted.mounted >= 2, "{mounted:?}");
    let asked = tokens.server.requests().split_off(seen);
    assert!(
        asked.iter().any(|r| r
            .path
            .contains("scope=repository%3Aprivate%2Fmounted%3Apull%2Cpush")
            && r.path
                .contains("scope=repository%3Aprivate%2Forigin%3Apull")),
        "{:?}",
        asked.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let back = open_store(dir.path(), "m");
    let by_digest = format!("{}/private/mounted@{}", reg.host(), mounted.digest.unwrap());
    registry::pull(&back, &by_digest, &pull_opts(dir.path(), creds(READER))).unwrap();
}

#[test]
fn short_lived_tokens_are_refreshed_before_they_expire_without_a_401() {
    let Some((tokens, reg, _)) = setup() else {
        return;
    };
    let port = reg.port;
    // A proxy in front of the registry counting its refusals.
    let refused = counter();
    let r = refused.clone();
    let proxy = FakeServer::start(move |req| {
        let resp = forward_auth(port, req);
        if resp.status == 401 {
            r.fetch_add(1, Ordering::SeqCst);
        }
        resp
    });
    let dir = tempdir("berth-token-test-");
    // Tokens usable (and said to be usable) for 3 s.
    tokens.lifetime.store(3, Ordering::SeqCst);
    let before = tokens.token_requests();
    // Once the root manifest is in, wait past the token's life: the next requests must find
    // a fresh token already in hand.
    let slept = AtomicBool::new(false);
    let progress = |e: &ProgressEvent<'_>| {
        if e.finished && !slept.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(4));
        }
    };
    let store = open_store(dir.path(), "a");
    let name = format!("{}/private/busybox:latest", proxy.host());
    let opts = PullOptions {
        registry: reg_opts(dir.path(), creds(READER)),
        progress: &progress,
        max_concurrent: 1,
        ..PullOptions::default()
    };
    registry::pull(&store, &name, &opts).unwrap();
    assert!(slept.load(Ordering::SeqCst));
    assert!(store.verify().unwrap().corrupt.is_empty());
    let blob_gets = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .count();
    assert!(blob_gets >= 2, "{blob_gets}");
    assert!(
        tokens.token_requests() - before >= 2,
        "a second token was fetched after the first ran out"
    );
    // The only refusal is the first, anonymous request's challenge.
    assert_eq!(refused.load(Ordering::SeqCst), 1);
}

#[test]
fn hosts_toml_headers_reach_the_token_realm_but_not_a_configured_authorization() {
    let Some((tokens, reg, _)) = setup() else {
        return;
    };
    let dir = tempdir("berth-token-test-");
    let hosts = dir.path().join("hosts.d");
    std::fs::create_dir_all(hosts.join(reg.host())).unwrap();
    std::fs::write(
        hosts.join(reg.host()).join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[header]\n  x-berth-hdr = \"v\"\n  authorization = \"Bearer configured-not-for-the-realm\"\n",
            reg.host()
        ),
    )
    .unwrap();
    let mut o = pull_opts(dir.path(), creds(READER));
    o.registry.plain_http = false;
    o.registry.hosts_dir = Some(hosts);
    let before = tokens.server.requests().len();
    let store = open_store(dir.path(), "a");
    let name = format!("{}/private/busybox:latest", reg.host());
    registry::pull(&store, &name, &o).unwrap();
    let asked = tokens.server.requests().split_off(before);
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!(r.header("x-berth-hdr"), Some("v"), "{}", r.path);
        let auths: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(auths.len(), 1, "{auths:?}");
        assert!(auths[0].starts_with("Basic "), "{auths:?}");
    }
}
