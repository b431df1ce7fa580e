//! Registry settings of `berth --address SOCKET image pull|push` through `berthd`, as root,
//! against a real `docker-registry` on loopback (the registry test support): the daemon's own
//! credentials (auth file), certificates directory, hosts directory and plain-HTTP hosts, and
//! the client's credentials (sent with the request, which they then decide), CA files,
//! certificates and hosts directories and retries, each proven by a pull that works only
//! through it. Every daemon, registry and directory is owned by a guard that removes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "../crates/image/tests/registry_support/mod.rs"]
mod registry_support;
#[path = "common/berthd_support.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use registry_support::setup::busybox_registry;
use registry_support::{FakeServer, Registry, Resp, make_pki, tempdir};
use support::{Daemon, example_bin, prerequisites, stderr};

/// `berth [--address SOCKET] login` writing `auth_file`, over plain HTTP (with --address, too,
/// the client's own file).
fn login(address: Option<&Path>, auth_file: &Path, host: &str, user: &str, password: &str) {
    let mut cmd = Command::new(example_bin("berth"));
    if let Some(socket) = address {
        cmd.arg("--address").arg(socket);
    }
    let mut child = cmd
        .args(["login", host, "--plain-http", "--username", user])
        .args(["--password-stdin", "--auth-file"])
        .arg(auth_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "login: {}", stderr(&out));
}

#[test]
fn remote_pull_uses_the_daemons_credentials_or_the_clients() {
    let Some(_fixture) = prerequisites() else {
        return;
    };
    let Some(reg) = busybox_registry(Some(("berthd", "s3cret-pw")), "private/busybox:latest")
    else {
        return;
    };
    let host = reg.host();
    let reference = format!("{host}/private/busybox:latest");
    let tmp = tempdir("berthd-image-auth-");
    let daemon_auth = tmp.path().join("daemon/config.json");
    let client_auth = tmp.path().join("client/config.json");
    let no_auth = tmp.path().join("none/config.json");
    // The daemon reaches the registry over plain HTTP by its own setting.
    let d = Daemon::with_args(&[
        "--auth-file",
        daemon_auth.to_str().unwrap(),
        "--insecure-registry",
        &host,
    ]);
    let pull = |client_auth: &Path| {
        d.cli(&[
            "image",
            "pull",
            "--no-unpack",
            "--auth-file",
            client_auth.to_str().unwrap(),
            &reference,
        ])
    };

    let push = |client_auth: &Path, tag: &str| {
        d.cli(&[
            "image",
            "push",
            "--auth-file",
            client_auth.to_str().unwrap(),
            &reference,
            &format!("{host}/private/copy:{tag}"),
        ])
    };

    // Nobody has credentials: refused, FailedPrecondition.
    let out = pull(&no_auth);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("berth: FailedPrecondition: pulling"),
        "{}",
        stderr(&out)
    );
    // The client's credentials (its login is its own, with --address too) are sent and used
    // for the request (the daemon has none).
    login(
        Some(&d.socket()),
        &client_auth,
        &host,
        "berthd",
        "s3cret-pw",
    );
    assert!(!daemon_auth.exists());
    let out = pull(&client_auth);
    assert!(out.status.success(), "{}", stderr(&out));
    // A push goes with the client's credentials for the target's registry too.
    let out = push(&no_auth, "client");
    assert!(
        stderr(&out).starts_with("berth: FailedPrecondition: pushing"),
        "{}",
        stderr(&out)
    );
    let out = push(&client_auth, "client");
    assert!(out.status.success(), "{}", stderr(&out));
    d.cli_ok(&["image", "rm", &reference]);
    // The daemon's own auth file serves a client without credentials.
    login(None, &daemon_auth, &host, "berthd", "s3cret-pw");
    let out = pull(&no_auth);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.image_digest(&reference).is_some());
    let out = push(&no_auth, "daemon");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("{host}/private/copy:daemon sha256:")),
        "{out:?}"
    );
    // Wrong client credentials win over the daemon's good ones: they are the request's.
    let wrong = tmp.path().join("wrong/config.json");
    std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    std::fs::write(
        &wrong,
        // base64("berthd:wrong-pw")
        format!(r#"{{"auths":{{"{host}":{{"auth":"YmVydGhkOndyb25nLXB3"}}}}}}"#),
    )
    .unwrap();
    let out = pull(&wrong);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("FailedPrecondition"),
        "{}",
        stderr(&out)
    );
    // No password reaches the audit log.
    let log = std::fs::read_dir(d.audit().parent().unwrap())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(log.contains("images.pull"), "{log}");
    assert!(
        !log.contains("s3cret") && !log.contains("wrong-pw"),
        "{log}"
    );
}

#[test]
fn remote_pull_over_tls_takes_the_clients_ca_file_or_the_daemons_certs_dir() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let pki = tempdir("berthd-image-pki-");
    let Some((ca, crt, key)) = make_pki(pki.path(), "berthd", "IP:127.0.0.1") else {
        return;
    };
    let Some(reg) = Registry::start_tls(None, &crt, &key) else {
        return;
    };
    reg.seed(&fixture, "tls/busybox:latest");
    let host = reg.host();
    let reference = format!("{host}/tls/busybox:latest");
    let tmp = tempdir("berthd-image-tls-");
    let no_auth = tmp.path().join("no-auth.json");
    let no_auth_s = no_auth.to_str().unwrap();
    let empty_certs = tmp.path().join("empty-certs.d");
    std::fs::create_dir_all(&empty_certs).unwrap();
    let d = Daemon::with_args(&[
        "--auth-file",
        no_auth_s,
        "--certs-dir",
        empty_certs.to_str().unwrap(),
    ]);
    let pull = |extra: &[&str]| {
        let mut args = vec!["image", "pull", "--no-unpack", "--auth-file", no_auth_s];
        args.extend_from_slice(extra);
        args.push(&reference);
        d.cli(&args)
    };

    // The daemon does not know the CA: refused, FailedPrecondition, with the hint.
    let out = pull(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("berth: FailedPrecondition: pulling") && err.contains("unknown authority"),
        "{err}"
    );
    // The client names the CA file (a relative path, made absolute for the daemon).
    let out = Command::new(example_bin("berth"))
        .arg("--address")
        .arg(d.socket())
        .args(["image", "pull", "--no-unpack", "--auth-file", no_auth_s])
        .args(["--ca-file", "berthd-ca.crt", &reference])
        .current_dir(pki.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.image_digest(&reference).is_some());
    d.cli_ok(&["image", "rm", &reference]);
    // A certificates directory named by the client replaces the daemon's.
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(&ca, certs.join(&host).join("ca.crt")).unwrap();
    let out = pull(&["--certs-dir", certs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.cli_ok(&["image", "rm", &reference]);
    // And the daemon's own certificates directory, once it has the CA, serves every client.
    drop(d);
    let d = Daemon::with_args(&[
        "--auth-file",
        no_auth_s,
        "--certs-dir",
        certs.to_str().unwrap(),
    ]);
    let out = d.cli(&["image", "pull", "--auth-file", no_auth_s, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli(&["run", "--rm", &reference, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_no_mounts();
}

#[test]
fn remote_pull_through_a_mirror_of_the_clients_or_the_daemons_hosts_dir() {
    let Some(_fixture) = prerequisites() else {
        return;
    };
    let Some(mirror) = busybox_registry(None, "lib/busybox:latest") else {
        return;
    };
    let upstream = FakeServer::start(|_| Resp::new(503));
    let tmp = tempdir("berthd-image-hosts-");
    let hosts = tmp.path().join("hosts.d");
    let host_dir = hosts.join(upstream.host());
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
    let reference = format!("{}/lib/busybox:latest", upstream.host());
    let no_auth = tmp.path().join("no-auth.json");
    let no_auth_s = no_auth.to_str().unwrap();
    let pull = |d: &Daemon, extra: &[&str]| {
        let mut args = vec!["image", "pull", "-q", "--auth-file", no_auth_s];
        args.extend_from_slice(extra);
        args.push(&reference);
        d.cli(&args)
    };

    // Without a hosts directory the upstream answers 503: Unavailable, after `--retries`
    // attempts (here one).
    let d = Daemon::with_args(&["--auth-file", no_auth_s]);
    let out = pull(&d, &["--plain-http", "--retries", "1"]);
    assert!(
        stderr(&out).starts_with(&format!("berth: Unavailable: pulling {reference}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(upstream.requests().len(), 1, "{:?}", upstream.requests());
    // The client's hosts directory sends the pull to the mirror.
    let out = pull(&d, &["--hosts-dir", hosts.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        upstream.requests().len(),
        1,
        "the upstream was not asked again"
    );
    drop(d);
    // So does the daemon's own.
    let d = Daemon::with_args(&[
        "--auth-file",
        no_auth_s,
        "--hosts-dir",
        hosts.to_str().unwrap(),
    ]);
    let out = pull(&d, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        upstream.requests().len(),
        1,
        "the upstream was not asked again"
    );
    let out = d.cli(&["run", "--rm", &reference, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_no_mounts();
}
