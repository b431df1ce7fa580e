//! Pull and unpack from a private registry: the busybox and Debian fixtures, pulled from a
//! local `docker-registry` and unpacked on overlay, mount as the same tree as
//! `umoci raw unpack` of the fixture gives, every layer applied while it downloaded (the
//! streaming path), also when a layer resumes on another host (a mirror cutting it short);
//! a second pull+unpack reuses everything.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;
mod unpack_support;

use berth_image::registry::{self, PullOptions, RegistryOptions, RetryPolicy};
use berth_image::unpack::UnpackOptions;
use registry_support::Registry;
use unpack_support::{Backend, Env, assert_same_tree, fixture, have_umoci, privileged, umoci_tree};

fn check(archive: &str, reference: &str, tag: &str) {
    if !privileged() || !have_umoci() {
        return;
    }
    let (Some(src), Some(reference)) = (fixture(archive), fixture(reference)) else {
        return;
    };
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.seed(&src, &format!("unpack/image:{tag}"));
    let env = Env::new(Backend::Overlay);
    let opts = PullOptions {
        registry: RegistryOptions {
            plain_http: true,
            auth_file: Some(env.tmp.path().join("no-auth.json")),
            ..RegistryOptions::default()
        },
        ..PullOptions::default()
    };
    let name = format!("{}/unpack/image:{tag}", reg.host());
    let uo = UnpackOptions::new("overlay");
    let (pulled, unpacked) =
        registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &opts, &uo).unwrap();
    assert_eq!(pulled.name, name);
    assert!(!unpacked.layers.is_empty());
    // Every layer was applied while it downloaded (fresh store, overlay can rebase), and
    // the unpack that followed found the chain committed.
    assert_eq!(pulled.streamed, unpacked.layers.len(), "{pulled:?}");
    assert_eq!(unpacked.applied(), 0);
    let top = unpacked.chain_id.clone().unwrap();
    let ours = env.chain_tree(&top.to_string());
    assert_same_tree(
        &ours,
        umoci_tree(&reference, tag),
        &format!("pulled {archive}"),
    );

    // Again: nothing downloaded, nothing applied.
    let (again, unpacked2) =
        registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &opts, &uo).unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(unpacked2.applied(), 0);
    assert_eq!(unpacked2.chain_id, Some(top));
    env.assert_clean();
}

#[test]
fn busybox_pulled_and_unpacked_matches_umoci() {
    check("busybox.oci.tar", "busybox-oci", "latest");
}

#[test]
fn debian_pulled_and_unpacked_matches_umoci() {
    check("debian-gzip.oci.tar", "debian-gzip.oci.tar", "bookworm");
}

#[test]
fn interrupted_streamed_pull_recovers_on_rerun() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !privileged() || !have_umoci() {
        return;
    }
    let Some(src) = fixture("debian-gzip.oci.tar") else {
        return;
    };
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.seed(&src, "cut/debian:bookworm");
    // Cut the first download of every big blob after 1 MiB.
    let upstream = reg.port;
    let cuts = std::sync::Arc::new(AtomicUsize::new(0));
    let c = cuts.clone();
    let proxy = registry_support::FakeServer::start(move |req| {
        let mut resp = registry_support::forward(upstream, req);
        if req.path.contains("/blobs/")
            && req.header("range").is_none()
            && resp.body.len() > 2 << 20
            && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            resp.cut_at = Some(1 << 20);
        }
        resp
    });
    let env = Env::new(Backend::Overlay);
    let opts = PullOptions {
        registry: RegistryOptions {
            plain_http: true,
            auth_file: Some(env.tmp.path().join("no-auth.json")),
            ..RegistryOptions::default()
        },
        ..PullOptions::default()
    };
    let name = format!("{}/cut/debian:bookworm", proxy.host());
    let uo = UnpackOptions::new("overlay");
    let mut once = opts.clone();
    once.registry.retry = RetryPolicy::none();
    assert!(registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &once, &uo).is_err());
    // No active snapshot of the failed streamed layer is left.
    assert!(
        env.snapshots()
            .iter()
            .all(|(_, kind, _)| *kind == berth_snapshot::Kind::Committed),
        "{:?}",
        env.snapshots()
    );
    let (pulled, unpacked) =
        registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &opts, &uo).unwrap();
    assert!(!pulled.resumed.is_empty(), "{pulled:?}");
    // The resumed layer could not stream: the unpack after the pull applied it (and whatever
    // sits above it).
    assert!(unpacked.applied() >= 1, "{unpacked:?}");
    let top = unpacked.chain_id.clone().unwrap();
    let ours = env.chain_tree(&top.to_string());
    assert_same_tree(&ours, umoci_tree(&src, "bookworm"), "pulled after a cut");
    env.assert_clean();
}

/// A connection cut in the middle of a layer within one pull: the retry resumes with Range and
/// keeps feeding the same streamed apply, so every layer is still applied while downloading and
/// no byte is fetched twice.
#[test]
fn cut_layer_is_resumed_within_the_pull_and_still_streams() {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    if !privileged() || !have_umoci() {
        return;
    }
    let Some(src) = fixture("debian-gzip.oci.tar") else {
        return;
    };
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.seed(&src, "cutin/debian:bookworm");
    let upstream = reg.port;
    let cuts = std::sync::Arc::new(AtomicUsize::new(0));
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let (c, sv) = (cuts.clone(), served.clone());
    let proxy = registry_support::FakeServer::start(move |req| {
        let mut resp = registry_support::forward(upstream, req);
        if req.path.contains("/blobs/") && req.method == "GET" {
            if req.header("range").is_none()
                && resp.body.len() > 2 << 20
                && c.fetch_add(1, Ordering::SeqCst) == 0
            {
                resp.cut_at = Some(1 << 20);
            }
            let n = resp.cut_at.unwrap_or(resp.body.len()).min(resp.body.len());
            sv.fetch_add(n as u64, Ordering::SeqCst);
        }
        resp
    });
    let env = Env::new(Backend::Overlay);
    let opts = PullOptions {
        registry: RegistryOptions {
            plain_http: true,
            auth_file: Some(env.tmp.path().join("no-auth.json")),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: std::time::Duration::from_millis(20),
                max_delay: std::time::Duration::from_millis(200),
            },
            ..RegistryOptions::default()
        },
        ..PullOptions::default()
    };
    let name = format!("{}/cutin/debian:bookworm", proxy.host());
    let uo = UnpackOptions::new("overlay");
    let (pulled, unpacked) =
        registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &opts, &uo).unwrap();
    assert!(cuts.load(Ordering::SeqCst) >= 1);
    assert_eq!(pulled.resumed.len(), 1, "{pulled:?}");
    assert_eq!(pulled.resumed[0].1, 1 << 20, "{pulled:?}");
    // The resumed layer streamed too: nothing was left for the unpack to apply.
    assert_eq!(pulled.streamed, unpacked.layers.len(), "{pulled:?}");
    assert_eq!(unpacked.applied(), 0, "{unpacked:?}");
    // Every blob byte crossed the proxy once (config included: it is a blob too).
    assert_eq!(
        served.load(Ordering::SeqCst),
        pulled.downloaded + config_size(&env, &pulled)
    );
    let top = unpacked.chain_id.clone().unwrap();
    let ours = env.chain_tree(&top.to_string());
    assert_same_tree(&ours, umoci_tree(&src, "bookworm"), "pulled across a cut");
    env.assert_clean();
}

/// A layer whose body a mirror cuts short hands over to the upstream, which resumes it with
/// Range and keeps feeding the same streamed apply: every layer is still applied while it
/// downloads, and the tree is umoci's.
#[test]
fn a_layer_cut_on_a_mirror_resumes_on_the_upstream_and_still_streams() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !privileged() || !have_umoci() {
        return;
    }
    let Some(src) = fixture("debian-gzip.oci.tar") else {
        return;
    };
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.seed(&src, "mirrored/debian:bookworm");
    let upstream = reg.port;
    let cuts = std::sync::Arc::new(AtomicUsize::new(0));
    let c = cuts.clone();
    let mirror = registry_support::FakeServer::start(move |req| {
        let mut resp = registry_support::forward(upstream, req);
        if req.path.contains("/blobs/")
            && resp.body.len() > 2 << 20
            && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            resp.cut_at = Some(1 << 20);
        }
        resp
    });
    let env = Env::new(Backend::Overlay);
    let hosts = env.tmp.path().join("hosts.d");
    std::fs::create_dir_all(hosts.join(reg.host())).unwrap();
    std::fs::write(
        hosts.join(reg.host()).join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let opts = PullOptions {
        registry: RegistryOptions {
            hosts_dir: Some(hosts),
            auth_file: Some(env.tmp.path().join("no-auth.json")),
            retry: RetryPolicy::none(),
            ..RegistryOptions::default()
        },
        ..PullOptions::default()
    };
    let name = format!("{}/mirrored/debian:bookworm", reg.host());
    let uo = UnpackOptions::new("overlay");
    let (pulled, unpacked) =
        registry::pull_and_unpack(&env.store, env.sn.as_ref(), &name, &opts, &uo).unwrap();
    assert!(
        cuts.load(Ordering::SeqCst) >= 1,
        "a layer went through the mirror cut"
    );
    assert_eq!(pulled.resumed.len(), 1, "{pulled:?}");
    assert_eq!(pulled.resumed[0].1, 1 << 20, "{pulled:?}");
    assert_eq!(pulled.streamed, unpacked.layers.len(), "{pulled:?}");
    assert_eq!(unpacked.applied(), 0, "{unpacked:?}");
    let top = unpacked.chain_id.clone().unwrap();
    let ours = env.chain_tree(&top.to_string());
    assert_same_tree(&ours, umoci_tree(&src, "bookworm"), "pulled across hosts");
    env.assert_clean();
}

fn config_size(env: &Env, pulled: &registry::PullReport) -> u64 {
    let resolved = berth_image::unpack::resolve(&env.store, &pulled.target, None).unwrap();
    env.store.info(&resolved.config).unwrap().size
}
