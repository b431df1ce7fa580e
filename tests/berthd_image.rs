//! `berth --address SOCKET image pull|push` and `commit` through `berthd`, as root, against a
//! real `docker-registry` on loopback (the registry test support): a push from one daemon and
//! a pull into another whose image then runs; the progress streams (over the generated client,
//! and drawn by the CLI's bars under a pty) and the events; errors by kind (a missing
//! repository is NotFound naming the reference) and the audit log; pulls that outlive their
//! client, run concurrently or go by digest; and commits of stopped and running containers
//! (frozen meanwhile, or not) whose new layer holds what the container wrote, with `-c` config
//! changes, message and author (also after a push and a pull into another daemon). The
//! registry settings and credentials are `berthd_registry.rs`'s. Every daemon, registry and
//! directory is owned by a guard that removes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

#[path = "common/pty.rs"]
mod pty;
#[path = "../crates/image/tests/registry_support/mod.rs"]
mod registry_support;
#[path = "common/berthd_support.rs"]
mod support;

use std::process::{Command, Stdio};

use proto::events_client::EventsClient;
use proto::images_client::ImagesClient;
use proto::transfer_progress::Event;
use registry_support::setup::busybox_registry;
use registry_support::{Registry, tempdir};
use support::{
    Daemon, IMAGE, eventually, example_bin, prerequisites, proto, stderr, tokio, unavailable,
};

fn have_script() -> bool {
    Command::new("script").arg("--version").output().is_ok() || {
        unavailable("script(1) from util-linux");
        false
    }
}

#[test]
fn remote_push_then_pull_into_another_daemon_streams_progress_and_runs() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    if !have_script() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let host = reg.host();
    let remote = format!("{host}/berthd/busybox:v1");
    let tmp = tempdir("berthd-image-");
    // Neither the daemons nor the client may use the host's own docker config.
    let no_auth = tmp.path().join("no-auth.json");
    let no_auth_s = no_auth.to_str().unwrap();
    let daemon_args = ["--auth-file", no_auth_s];

    // Push an imported image through the first daemon.
    let src = Daemon::with_args(&daemon_args);
    src.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    let source_digest = src.image_digest(IMAGE).unwrap();
    let out = src.cli(&[
        "image",
        "push",
        "--plain-http",
        "--auth-file",
        no_auth_s,
        IMAGE,
        &remote,
    ]);
    assert!(out.status.success(), "push: {}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{remote} {source_digest}\n")
    );
    assert!(
        stderr(&out).contains("blobs uploaded") && stderr(&out).contains("manifests"),
        "{}",
        stderr(&out)
    );
    let pushes = src.audited("images.push");
    assert!(
        pushes
            .iter()
            .any(|r| r["object"] == format!("{IMAGE} -> {remote}") && r["result"] == "ok"),
        "{pushes:?}"
    );
    // Pushing what the daemon does not have is NotFound.
    let out = src.cli(&[
        "image",
        "push",
        "--plain-http",
        "--auth-file",
        no_auth_s,
        "berthd-test/absent:v1",
        &remote,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("berth: NotFound: pushing berthd-test/absent:v1"),
        "{}",
        stderr(&out)
    );
    // The push stream over the generated client: upload progress, then the result.
    let copy = format!("{host}/berthd/copy:v1");
    let messages = tokio().block_on(async {
        let mut c = ImagesClient::new(src.channel().await);
        let mut stream = c
            .push(proto::PushImageRequest {
                reference: IMAGE.into(),
                target: copy.clone(),
                registry: Some(proto::RegistryOptions {
                    plain_http: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            all.push(m.event.unwrap());
        }
        all
    });
    let Some(Event::Pushed(pushed)) = messages.last() else {
        panic!("the stream ends with the result: {messages:?}");
    };
    assert_eq!(
        (pushed.reference.as_str(), pushed.digest.as_str()),
        (copy.as_str(), source_digest.as_str())
    );
    assert!(pushed.uploaded >= 2 && pushed.manifests == 1, "{pushed:?}");
    assert!(
        messages.iter().any(|m| matches!(m, Event::Progress(p)
            if p.phase == "upload" && p.finished && p.item.starts_with("sha256:"))),
        "upload progress: {messages:?}"
    );
    drop(src);

    // Pull it into another daemon over the generated client: per-layer progress with totals,
    // download and unpack phases, then the result.
    let dst = Daemon::with_args(&daemon_args);
    let rt = tokio();
    let (messages, event) = rt.block_on(async {
        let mut events = EventsClient::new(dst.channel().await)
            .subscribe(proto::SubscribeRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut c = ImagesClient::new(dst.channel().await);
        let mut stream = c
            .pull(proto::PullImageRequest {
                reference: remote.clone(),
                registry: Some(proto::RegistryOptions {
                    plain_http: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut all = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            all.push(m.event.unwrap());
        }
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let e = events.message().await.unwrap().unwrap();
                if e.kind == "image-pull" {
                    break e;
                }
            }
        })
        .await
        .expect("an image-pull event");
        (all, event)
    });
    assert_eq!(
        (event.object.as_str(), event.detail.as_str()),
        (remote.as_str(), source_digest.as_str())
    );
    let Some(Event::Pulled(result)) = messages.last() else {
        panic!("the stream ends with the result: {messages:?}");
    };
    let image = result.image.clone().unwrap();
    assert_eq!(image.name, remote);
    assert_eq!(image.digest, source_digest);
    assert!(
        image.media_type.contains("manifest") && image.size > 0,
        "{image:?}"
    );
    assert!(result.unpacked && !result.chain_id.is_empty(), "{result:?}");
    assert!(result.downloaded > 0 && result.blobs >= 3, "{result:?}");
    let progress: Vec<&proto::ProgressEvent> = messages
        .iter()
        .filter_map(|m| match m {
            Event::Progress(p) => Some(p),
            _ => None,
        })
        .collect();
    let layer_done = progress
        .iter()
        .find(|p| p.phase == "download" && p.kind == "layer" && p.finished)
        .unwrap_or_else(|| panic!("a finished layer download: {progress:?}"));
    assert_eq!(Some(layer_done.done), layer_done.total, "{layer_done:?}");
    assert!(layer_done.item.starts_with("sha256:"), "{layer_done:?}");
    assert!(
        progress.iter().any(|p| p.phase == "unpack"),
        "unpack progress: {progress:?}"
    );
    // Per item, `done` never decreases.
    for p in &progress {
        let earlier = progress
            .iter()
            .take_while(|q| !std::ptr::eq(**q, *p))
            .filter(|q| q.item == p.item && q.phase == p.phase);
        assert!(earlier.into_iter().all(|q| q.done <= p.done), "{p:?}");
    }
    // It runs.
    let out = dst.cli(&["run", "--rm", &remote, "sh", "-c", "echo pulled-runs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled-runs\n");

    // Removed, then pulled again by the CLI at a terminal: the same bars and summary lines as
    // a local pull, and the name and digest.
    dst.cli_ok(&["image", "rm", &remote]);
    let line = format!(
        "{} --address {} image pull --plain-http --auth-file {no_auth_s} {remote}",
        example_bin("berth").display(),
        dst.socket().display()
    );
    let out = pty::run_under_pty(&line, 120);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{remote} {source_digest}")),
        "{text}"
    );
    assert!(
        text.contains("   layer sha256:") && text.contains("bytes done"),
        "per-layer progress lines: {text}"
    );
    assert!(text.contains("already stored"), "{text}");
    assert!(text.contains("unpacked: "), "{text}");
    assert_eq!(dst.image_digest(&remote), Some(source_digest.clone()));
    // (Checked at once: the test daemon's audit log rotates at about 520 bytes.)
    let pulls = dst.audited("images.pull");
    assert!(
        pulls
            .iter()
            .any(|r| r["object"] == remote.as_str() && r["result"] == "ok"),
        "{pulls:?}"
    );
    let out = dst.cli(&["run", "--rm", &remote, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A repository the registry does not have: NotFound, naming the reference.
    let missing = format!("{host}/berthd/missing:v1");
    let out = dst.cli(&[
        "image",
        "pull",
        "--plain-http",
        "--auth-file",
        no_auth_s,
        &missing,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("berth: NotFound: pulling {missing}")),
        "{err}"
    );
    let pulls = dst.audited("images.pull");
    assert!(
        pulls.iter().any(|r| r["object"] == missing.as_str()
            && r["result"].as_str().unwrap().starts_with("NotFound")),
        "{pulls:?}"
    );
    // The message is the local command's, after the code.
    let local = Command::new(example_bin("berth"))
        .arg("--root")
        .arg(tmp.path().join("local-root"))
        .args(["image", "pull", "--plain-http", "--auth-file", no_auth_s])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!local.status.success());
    assert_eq!(
        err,
        stderr(&local).replacen("berth: ", "berth: NotFound: ", 1)
    );
    // Bad requests are InvalidArgument, refused before any transfer, and audited.
    let out = dst.cli(&[
        "image",
        "pull",
        "--snapshotter",
        "zfs",
        "--auth-file",
        no_auth_s,
        &remote,
    ]);
    assert!(
        stderr(&out).starts_with("berth: InvalidArgument: unknown snapshotter"),
        "{}",
        stderr(&out)
    );
    let out = dst.cli(&["image", "pull", "--auth-file", no_auth_s, "Not A Ref"]);
    assert!(
        stderr(&out).starts_with("berth: InvalidArgument: pulling Not A Ref"),
        "{}",
        stderr(&out)
    );
    rt.block_on(async {
        let mut c = ImagesClient::new(dst.channel().await);
        let r = c
            .pull(proto::PullImageRequest {
                reference: remote.clone(),
                registry: Some(proto::RegistryOptions {
                    ca_files: vec!["relative.pem".into()],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.err().unwrap().code(), tonic::Code::InvalidArgument);
    });
    dst.assert_no_mounts();
}

#[test]
fn remote_commit_makes_an_image_of_a_containers_changes() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let mut d = Daemon::with_image(&fixture);
    const COMMITTED: &str = "berthd-test/committed:v1";

    // A stopped container's file is in the new image's top layer.
    let out = d.cli(&[
        "run",
        "--name",
        "writer",
        IMAGE,
        "sh",
        "-c",
        "echo written-by-the-container > /made-here",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli_ok(&[
        "commit",
        "-c",
        r#"CMD ["cat", "/made-here"]"#,
        "--change",
        r#"ENV GREETING="hello there""#,
        "-c",
        "WORKDIR /etc",
        "writer",
        COMMITTED,
    ]);
    let digest = d.image_digest(COMMITTED).unwrap();
    assert_eq!(out, format!("docker.io/{COMMITTED} {digest}\n"));
    // (Checked at once: the test daemon's audit log rotates at about 520 bytes.)
    let commits = d.audited("images.commit");
    assert!(
        commits
            .iter()
            .any(|r| r["object"] == format!("writer -> {COMMITTED}") && r["result"] == "ok"),
        "{commits:?}"
    );
    assert_ne!(Some(digest), d.image_digest(IMAGE));
    // Its Cmd is the change's.
    let out = d.cli(&["run", "--rm", COMMITTED]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "written-by-the-container\n"
    );
    let out = d.cli(&["run", "--rm", COMMITTED, "sh", "-c", "echo $GREETING; pwd"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello there\n/etc\n",
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["run", "--rm", IMAGE, "cat", "/made-here"]);
    assert!(!out.status.success(), "the base image is unchanged");

    // A running container, committed with zstd layers, by its id.
    let id = d
        .cli_ok(&[
            "run",
            "-d",
            IMAGE,
            "sh",
            "-c",
            "echo live > /live-file; exec sleep 600",
        ])
        .trim()
        .to_owned();
    eventually("the running container's file", || {
        d.cli(&["exec", &id, "cat", "/live-file"]).stdout == b"live\n"
    });
    d.cli_ok(&[
        "commit",
        "--compression",
        "zstd",
        "-m",
        "the live state",
        "-a",
        "Berth Test <test@example.com>",
        &id,
        "berthd-test/live:v1",
    ]);
    // Frozen while its changes were read (docker's default), running again afterwards.
    let ps = d.cli_ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| id.starts_with(l.split_whitespace().next().unwrap()));
    assert!(line.is_some_and(|l| l.contains("running")), "{ps}");
    let out = d.cli(&["run", "--rm", "berthd-test/live:v1", "cat", "/live-file"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"live\n");
    // And without the pause.
    d.cli_ok(&["commit", "--pause=false", &id, "berthd-test/live:v2"]);
    let out = d.cli(&["run", "--rm", "berthd-test/live:v2", "cat", "/live-file"]);
    assert_eq!(out.stdout, b"live\n", "{}", stderr(&out));
    d.cli_ok(&["rm", "-f", &id]);

    // Errors by kind, as the other RPCs map them.
    let out = d.cli(&["commit", "no-such-container", "berthd-test/x:v1"]);
    assert!(
        stderr(&out).starts_with("berth: NotFound: no such container: no-such-container"),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["commit", "writer", "Not A Ref"]);
    assert!(
        stderr(&out).starts_with("berth: InvalidArgument: "),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&["commit", "-c", "RUN make", "writer", "berthd-test/x:v1"]);
    assert!(
        stderr(&out).starts_with("berth: InvalidArgument: change \"RUN make\""),
        "{}",
        stderr(&out)
    );
    let out = d.cli(&[
        "commit",
        "--compression",
        "lz4",
        "writer",
        "berthd-test/x:v1",
    ]);
    assert!(
        stderr(&out).starts_with("berth: InvalidArgument: unknown compression"),
        "{}",
        stderr(&out)
    );
    let commits = d.audited("images.commit");
    assert!(
        commits
            .iter()
            .any(|r| r["result"].as_str().unwrap().starts_with("InvalidArgument")),
        "{commits:?}"
    );
    d.cli_ok(&["rm", "writer"]);
    d.assert_no_mounts();

    // The message and author are in the image's config (read from the store once the daemon,
    // which holds it, is gone).
    d.kill9();
    let store = berth::image::content::ContentStore::open(&d.root().join("content")).unwrap();
    let image = store.images().get("docker.io/berthd-test/live:v1").unwrap();
    let resolved = berth::image::unpack::resolve(&store, &image.target, None).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_all(&resolved.config, 1 << 20).unwrap()).unwrap();
    assert_eq!(config["author"], "Berth Test <test@example.com>");
    let last = config["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["comment"], "the live state", "{last}");
    assert_eq!(last["author"], "Berth Test <test@example.com>", "{last}");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        resolved.layers.len(),
        "one diffID per layer"
    );
    let (top, _) = resolved.layers.last().unwrap();
    assert!(top.media_type.ends_with("+zstd"), "{top:?}");
}

#[test]
fn remote_pulls_outlive_their_clients_run_concurrently_and_take_digests() {
    let Some(_fixture) = prerequisites() else {
        return;
    };
    let Some(reg) = busybox_registry(None, "shared/busybox:latest") else {
        return;
    };
    let host = reg.host();
    let reference = format!("{host}/shared/busybox:latest");
    let tmp = tempdir("berthd-image-shared-");
    let no_auth = tmp.path().join("no-auth.json");
    let no_auth_s = no_auth.to_str().unwrap();
    let d = Daemon::with_args(&["--auth-file", no_auth_s, "--insecure-registry", &host]);

    // A client that leaves after the first message: the pull completes and is audited.
    tokio().block_on(async {
        let mut c = ImagesClient::new(d.channel().await);
        let mut stream = c
            .pull(proto::PullImageRequest {
                reference: reference.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
    });
    eventually("the abandoned pull's audit record", || {
        d.audited("images.pull")
            .iter()
            .any(|r| r["object"] == reference.as_str() && r["result"] == "ok")
    });
    let digest = d
        .image_digest(&reference)
        .expect("the abandoned pull completed");
    let out = d.cli(&["run", "--rm", &reference, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.cli_ok(&["image", "rm", &reference]);

    // Two clients pulling the same image at once share the work; -q prints the name only.
    let pullers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(example_bin("berth"))
                .arg("--address")
                .arg(d.socket())
                .args(["image", "pull", "-q", "--auth-file", no_auth_s, &reference])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in pullers {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{reference} {digest}\n")
        );
        assert_eq!(stderr(&out), "", "quiet");
    }

    // By digest.
    let by_digest = format!("{host}/shared/busybox@{digest}");
    let out = d.cli(&["image", "pull", "--auth-file", no_auth_s, &by_digest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{by_digest} {digest}\n")
    );
    assert!(stderr(&out).contains("already stored"), "{}", stderr(&out));

    // Pushed back to where it came from (no target): the registry has every blob.
    let out = d.cli(&["image", "push", "--auth-file", no_auth_s, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{reference} {digest}\n")
    );
    assert!(
        stderr(&out).contains("0 blobs uploaded"),
        "{}",
        stderr(&out)
    );
    d.assert_no_mounts();
}

#[test]
fn remote_commit_push_pull_round_trip() {
    let Some(fixture) = prerequisites() else {
        return;
    };
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let host = reg.host();
    let tmp = tempdir("berthd-image-commit-");
    let no_auth = tmp.path().join("no-auth.json");
    let no_auth_s = no_auth.to_str().unwrap();
    let args = ["--auth-file", no_auth_s, "--insecure-registry", &host];

    let src = Daemon::with_args(&args);
    src.cli_ok(&[
        "image",
        "import",
        fixture.to_str().unwrap(),
        "--name",
        IMAGE,
    ]);
    let out = src.cli(&[
        "run",
        "--name",
        "author",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /srv && echo travelled > /srv/note",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = format!("{host}/berthd/committed:v1");
    src.cli_ok(&["commit", "--compression", "zstd", "author", &reference]);
    let out = src.cli(&["image", "push", "--auth-file", no_auth_s, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = src.image_digest(&reference).unwrap();
    src.cli_ok(&["rm", "author"]);
    drop(src);

    let dst = Daemon::with_args(&args);
    let out = dst.cli(&["image", "pull", "--auth-file", no_auth_s, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dst.image_digest(&reference), Some(digest));
    let out = dst.cli(&["run", "--rm", &reference, "cat", "/srv/note"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"travelled\n");
    dst.assert_no_mounts();
}
