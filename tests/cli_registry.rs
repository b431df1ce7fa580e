//! `berth login`, `berth image pull` and `berth image push` run as a user would (the built
//! example binary) against a private `docker-registry` served over TLS with a CA made by the
//! test and htpasswd auth: `--ca-file`, `--certs-dir`, the auth file `login` writes (mode
//! 0600) and `logout` empties, `--retries`, and the clear refusal of an unknown CA; and a
//! pull through a mirror named by `--hosts-dir` (containerd's hosts.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "../crates/image/tests/registry_support/mod.rs"]
mod registry_support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use registry_support::setup::{busybox_registry, seeded};
use registry_support::{FakeServer, Registry, Resp, make_pki, tempdir};

/// `target/<profile>/examples/berth`, found from this test binary (`target/<profile>/deps/…`).
fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("berth");
    assert!(
        bin.is_file(),
        "{} is missing: run through `cargo test -p berth --all-features` (with `--test NAME` \
         alone, `cargo build -p berth --examples --all-features` first)",
        bin.display()
    );
    bin
}

fn berth(root: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(berth_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn login_pull_push_over_tls_with_a_private_ca() {
    let pki = tempdir("berth-cli-registry-pki-");
    let Some((ca, crt, key)) = make_pki(pki.path(), "cli", "IP:127.0.0.1") else {
        return;
    };
    let Some((reg, _)) = seeded(
        Registry::start_tls(Some(("cli", "cli-pw")), &crt, &key),
        "busybox.oci.tar",
        "cli/busybox:latest",
    ) else {
        return;
    };
    let tmp = tempdir("berth-cli-registry-");
    let root = tmp.path().join("root");
    let auth = tmp.path().join("docker/config.json");
    let auth_s = auth.to_str().unwrap();
    let ca_s = ca.to_str().unwrap();
    let empty_certs = tmp.path().join("no-certs.d");
    std::fs::create_dir_all(&empty_certs).unwrap();
    let empty_s = empty_certs.to_str().unwrap();
    let host = reg.host();
    let name = format!("{host}/cli/busybox:latest");

    // An unknown CA is refused, at once, saying what to do.
    let out = berth(
        &root,
        &[
            "image",
            "pull",
            "--quiet",
            "--no-unpack",
            "--certs-dir",
            empty_s,
            "--auth-file",
            auth_s,
            &name,
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown authority") && err.contains("--ca-file"),
        "{err}"
    );

    // A wrong password is refused and nothing is written.
    let login = |password: &str| {
        berth(
            &root,
            &[
                "login",
                &host,
                "--username",
                "cli",
                "--password-stdin",
                "--ca-file",
                ca_s,
                "--certs-dir",
                empty_s,
                "--auth-file",
                auth_s,
            ],
            Some(&format!("{password}\n")),
        )
    };
    let out = login("nope");
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!auth.exists());
    ok(&login("cli-pw"), "login");
    let mode = std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Pull with the stored credentials, trusting the CA by --ca-file.
    let out = berth(
        &root,
        &[
            "image",
            "pull",
            "--quiet",
            "--no-unpack",
            "--ca-file",
            ca_s,
            "--certs-dir",
            empty_s,
            "--auth-file",
            auth_s,
            "--retries",
            "2",
            "--retry-delay-ms",
            "50",
            &name,
        ],
        None,
    );
    ok(&out, "pull");

    // Push it elsewhere, trusting the CA through a certs directory this time.
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(&ca, certs.join(&host).join("ca.crt")).unwrap();
    let certs_s = certs.to_str().unwrap();
    let target = format!("{host}/cli/pushed:v1");
    let out = berth(
        &root,
        &[
            "image",
            "push",
            "--quiet",
            "--certs-dir",
            certs_s,
            "--auth-file",
            auth_s,
            "--chunk-mib",
            "1",
            &name,
            &target,
        ],
        None,
    );
    let pushed = ok(&out, "push");
    let digest = pushed
        .split_whitespace()
        .nth(1)
        .expect("push prints the digest")
        .to_owned();
    assert!(digest.starts_with("sha256:"), "{pushed}");

    // Pull the pushed image back by digest into another root.
    let root2 = tmp.path().join("root2");
    let by_digest = format!("{host}/cli/pushed@{digest}");
    let out = berth(
        &root2,
        &[
            "image",
            "pull",
            "--quiet",
            "--no-unpack",
            "--certs-dir",
            certs_s,
            "--auth-file",
            auth_s,
            &by_digest,
        ],
        None,
    );
    ok(&out, "pull back by digest");

    // Logout drops the stored credentials: the file keeps no entry for the host, a pull of
    // the private image is refused again, and a second logout has nothing to remove.
    let logout = || berth(&root, &["logout", &host, "--auth-file", auth_s], None);
    let said = ok(&logout(), "logout");
    assert!(said.contains("Removed login credentials"), "{said}");
    assert!(!std::fs::read_to_string(&auth).unwrap().contains(&host));
    let out = berth(
        &tmp.path().join("root3"),
        &[
            "image",
            "pull",
            "--quiet",
            "--no-unpack",
            "--certs-dir",
            certs_s,
            "--auth-file",
            auth_s,
            &by_digest,
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none are configured"), "{err}");
    let said = ok(&logout(), "second logout");
    assert!(said.contains("Not logged in"), "{said}");
}

#[test]
fn pull_through_a_mirror_named_by_hosts_dir() {
    let Some(mirror) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let upstream = FakeServer::start(|_| Resp::new(503));
    let tmp = tempdir("berth-cli-hosts-");
    let host_dir = tmp.path().join("certs.d").join(upstream.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let name = format!("{}/lib/busybox:latest", upstream.host());
    let out = berth(
        &tmp.path().join("root"),
        &[
            "image",
            "pull",
            "--quiet",
            "--no-unpack",
            "--retries",
            "1",
            "--auth-file",
            tmp.path().join("none.json").to_str().unwrap(),
            "--hosts-dir",
            tmp.path().join("certs.d").to_str().unwrap(),
            &name,
        ],
        None,
    );
    ok(&out, "pull through the mirror");
    assert!(upstream.requests().is_empty(), "the upstream was contacted");
}
