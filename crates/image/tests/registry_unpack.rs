//! Pull and unpack from a private registry: the busybox and Debian fixtures, pulled from a
//! local `docker-registry` and unpacked on overlay, mount as the same tree as
//! `umoci raw unpack` of the fixture gives, every layer applied while it downloaded (the
//! streaming path); a second pull+unpack reuses everything.
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;
mod unpack_support;

use berth_image::registry::{self, PullOptions, RegistryOptions};
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
