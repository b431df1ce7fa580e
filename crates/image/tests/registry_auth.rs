//! Credentials from docker credential helpers (`credHelpers`, `credsStore`) against a real
//! htpasswd-protected registry, and an identity token exchanged at a bearer realm. Each helper
//! is a small shell script the test writes into its own directory, found through
//! `RegistryOptions::helper_path` (the test process's `PATH` is never changed).
#![cfg(feature = "registry")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod registry_support;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use berth_image::ErrorKind;
use berth_image::registry::{self, PullOptions, RegistryOptions, RetryPolicy};
use registry_support::setup::{busybox_registry, open_store, pull_with};
use registry_support::{FakeServer, Resp, forward, tempdir};

/// A temp dir with a `bin/` of helpers, an auth file, and a log the helpers append to.
struct Helpers {
    dir: tempfile::TempDir,
}

impl Helpers {
    fn new() -> Helpers {
        let dir = tempdir("berth-registry-helpers-");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        Helpers { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("helper.log")
    }

    fn auth_file(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// Writes `docker-credential-NAME` running `body` (POSIX sh, builtins only: its PATH is
    /// the helper directory) after `read server` and logging `NAME $1 $server`.
    fn helper(&self, name: &str, body: &str) {
        let path = self.bin().join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\nread -r server\necho \"{name} $1 $server\" >> '{}'\n{body}\n",
            self.log().display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(&self, json: &str) {
        std::fs::write(self.auth_file(), json).unwrap();
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn opts(&self) -> PullOptions<'static> {
        pull_with(RegistryOptions {
            plain_http: true,
            auth_file: Some(self.auth_file()),
            helper_path: Some(OsString::from(self.bin())),
            retry: RetryPolicy::none(),
            ..RegistryOptions::default()
        })
    }
}

/// A helper answering `user`/`secret` for `server` only, "not found" for anything else.
fn answering(server: &str, user: &str, secret: &str) -> String {
    format!(
        "if [ \"$1\" = get ] && [ \"$server\" = '{server}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi"
    )
}

#[test]
fn cred_helpers_and_creds_store_answer_an_htpasswd_registry() {
    let Some(reg) = busybox_registry(Some(("helped", "h3lper-pw")), "private/busybox:latest")
    else {
        return;
    };
    let name = format!("{}/private/busybox:latest", reg.host());
    let h = Helpers::new();
    h.helper("berthtest", &answering(&reg.host(), "helped", "h3lper-pw"));
    h.helper(
        "berthnone",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    h.helper("berthbroken", "echo 'keychain exploded' >&2; exit 3");
    h.helper("berthjunk", "printf 'not json'");

    // credHelpers for this host.
    h.config(&format!(
        r#"{{"credHelpers":{{"{}":"berthtest"}},"auths":{{"{}":{{"auth":"d3Jvbmc6d3Jvbmc="}}}}}}"#,
        reg.host(),
        reg.host()
    ));
    let store = open_store(h.dir.path(), "a");
    let report = registry::pull(&store, &name, &h.opts()).unwrap();
    assert_eq!(report.name, name);
    assert_eq!(h.logged(), format!("berthtest get {}\n", reg.host()));

    // credsStore for every host (no per-host helper).
    h.config(r#"{"credsStore":"berthtest"}"#);
    let store = open_store(h.dir.path(), "b");
    registry::pull(&store, &name, &h.opts()).unwrap();
    assert!(
        h.logged()
            .ends_with(&format!("berthtest get {}\n", reg.host()))
    );

    // A helper without credentials for the host: anonymous, so the registry refuses.
    h.config(&format!(
        r#"{{"credHelpers":{{"{}":"berthnone"}}}}"#,
        reg.host()
    ));
    let store = open_store(h.dir.path(), "c");
    let e = registry::pull(&store, &name, &h.opts()).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");

    // A helper that fails, one that prints garbage, one that does not exist: clear errors.
    for (helper, says) in [
        ("berthbroken", "keychain exploded"),
        ("berthjunk", "not JSON"),
        ("berthmissing", "not found"),
    ] {
        h.config(&format!(
            r#"{{"credHelpers":{{"{}":"{helper}"}}}}"#,
            reg.host()
        ));
        let e = registry::pull(&store, &name, &h.opts()).unwrap_err();
        assert!(
            matches!(e, registry::Error::CredentialHelper { .. }),
            "{helper}: {e}"
        );
        assert!(e.to_string().contains(says), "{helper}: {e}");
        assert!(
            e.to_string()
                .contains(&format!("docker-credential-{helper}")),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
    // A helper name cannot point elsewhere.
    h.config(&format!(
        r#"{{"credHelpers":{{"{}":"../bin/sh"}}}}"#,
        reg.host()
    ));
    let e = registry::pull(&store, &name, &h.opts()).unwrap_err();
    assert!(e.to_string().contains("invalid helper name"), "{e}");
    assert!(store.images().list(&[]).unwrap().is_empty());
}

#[test]
fn identity_token_from_a_helper_is_exchanged_at_the_realm() {
    let Some(reg) = busybox_registry(None, "tok/busybox:latest") else {
        return;
    };
    const IDENTITY: &str = "refresh-me-42";
    const ACCESS: &str = "access-token-7";
    let upstream = reg.port;
    let own = Arc::new(AtomicU16::new(0));
    let o = own.clone();
    // Its own realm: POST /token with grant_type=refresh_token and the identity token issues
    // ACCESS; everything else wants `Bearer ACCESS`.
    let proxy = FakeServer::start(move |req| {
        if req.path.starts_with("/token") {
            let form = String::from_utf8_lossy(&req.body).to_string();
            let ok = req.method == "POST"
                && form.contains("grant_type=refresh_token")
                && form.contains(&format!("refresh_token={IDENTITY}"))
                && form.contains("service=berth-test");
            return if ok {
                Resp::new(200).body(format!("{{\"access_token\":\"{ACCESS}\"}}"))
            } else {
                Resp::new(401)
            };
        }
        if req.header("authorization") != Some(&format!("Bearer {ACCESS}")) {
            return Resp::new(401).header(
                "WWW-Authenticate",
                &format!(
                    "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"berth-test\"",
                    o.load(Ordering::SeqCst)
                ),
            );
        }
        forward(upstream, req)
    });
    own.store(proxy.port, Ordering::SeqCst);
    let h = Helpers::new();
    h.helper("berthid", &answering(&proxy.host(), "<token>", IDENTITY));
    h.config(&format!(
        r#"{{"credHelpers":{{"{}":"berthid"}}}}"#,
        proxy.host()
    ));
    let store = open_store(h.dir.path(), "s");
    let name = format!("{}/tok/busybox:latest", proxy.host());
    registry::pull(&store, &name, &h.opts()).unwrap();
    let reqs = proxy.requests();
    let token = reqs
        .iter()
        .find(|r| r.path.starts_with("/token"))
        .expect("a token request");
    assert_eq!(token.method, "POST");
    let form = String::from_utf8_lossy(&token.body);
    assert!(
        form.contains("scope=repository%3Atok%2Fbusybox%3Apull"),
        "{form}"
    );
    // The identity token never went to the registry as credentials.
    assert!(
        reqs.iter()
            .filter(|r| !r.path.starts_with("/token"))
            .all(|r| r
                .header("authorization")
                .is_none_or(|a| a == format!("Bearer {ACCESS}")))
    );
}

#[test]
fn login_stores_through_the_named_helper_and_pulls_with_it() {
    let Some(reg) = busybox_registry(Some(("stored", "st0red-pw")), "private/busybox:latest")
    else {
        return;
    };
    let h = Helpers::new();
    let vault = h.dir.path().join("vault.json");
    // A tiny store: `store` keeps the JSON it is given (the line `read -r server` took),
    // `get` prints it back.
    h.helper(
        "berthvault",
        &format!(
            "vault='{}'\nif [ \"$1\" = store ]; then\n  printf '%s' \"$server\" > \"$vault\"\nelif [ \"$1\" = get ] && [ -f \"$vault\" ]; then\n  read -r json < \"$vault\"\n  printf '%s' \"$json\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi",
            vault.display()
        ),
    );
    h.config(r#"{"credsStore":"berthvault","auths":{}}"#);
    let creds = registry::Credentials {
        username: "stored".into(),
        password: "st0red-pw".into(),
    };
    let opts = h.opts();
    let saved = registry::save_credentials_with(
        &h.auth_file(),
        &reg.host(),
        &creds,
        opts.registry.helper_path.as_deref(),
    )
    .unwrap();
    assert_eq!(
        saved,
        registry::SavedIn::Helper("docker-credential-berthvault".into())
    );
    // The helper got docker's JSON; the auth file holds no secret.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&vault).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], reg.host());
    assert_eq!(stored["Username"], "stored");
    assert_eq!(stored["Secret"], "st0red-pw");
    assert!(
        !std::fs::read_to_string(h.auth_file())
            .unwrap()
            .contains("st0red")
    );

    let store = open_store(h.dir.path(), "s");
    let name = format!("{}/private/busybox:latest", reg.host());
    registry::pull(&store, &name, &opts).unwrap();

    // Without a helper configured, login writes the file (mode 0600) as before.
    h.config("{}");
    let saved = registry::save_credentials_with(&h.auth_file(), &reg.host(), &creds, None).unwrap();
    assert_eq!(saved, registry::SavedIn::File(h.auth_file()));
    assert_eq!(
        registry::credentials_from_file(&h.auth_file(), &reg.host()).unwrap(),
        Some(creds)
    );
}

#[test]
fn logout_erases_through_the_helper_and_drops_inline_entries() {
    let Some(reg) = busybox_registry(Some(("leaving", "l3aving-pw")), "private/busybox:latest")
    else {
        return;
    };
    let h = Helpers::new();
    let vault = h.dir.path().join("vault.json");
    // `get` answers from the vault file, `erase` empties it (and says "not found" when
    // there is nothing to erase).
    h.helper(
        "berthgone",
        &format!(
            "vault='{}'\nif [ \"$1\" = get ] && [ -s \"$vault\" ]; then\n  read -r json < \"$vault\"\n  printf '%s' \"$json\"\nelif [ \"$1\" = erase ] && [ -s \"$vault\" ]; then\n  : > \"$vault\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi",
            vault.display()
        ),
    );
    std::fs::write(
        &vault,
        format!(
            r#"{{"ServerURL":"{}","Username":"leaving","Secret":"l3aving-pw"}}"#,
            reg.host()
        ),
    )
    .unwrap();
    // The helper holds the credentials; a stale inline copy sits in the file too.
    h.config(&format!(
        r#"{{"credsStore":"berthgone","auths":{{"{}":{{"auth":"bGVhdmluZzpsM2F2aW5nLXB3"}},"other:1":{{"auth":"eDp5"}}}}}}"#,
        reg.host()
    ));
    let name = format!("{}/private/busybox:latest", reg.host());
    let opts = h.opts();
    registry::pull(&open_store(h.dir.path(), "a"), &name, &opts).unwrap();

    let removed = registry::remove_credentials_with(
        &h.auth_file(),
        &reg.host(),
        opts.registry.helper_path.as_deref(),
    )
    .unwrap();
    assert_eq!(
        removed,
        vec![
            registry::SavedIn::Helper("docker-credential-berthgone".into()),
            registry::SavedIn::File(h.auth_file()),
        ]
    );
    assert!(
        h.logged()
            .contains(&format!("berthgone erase {}\n", reg.host())),
        "{}",
        h.logged()
    );
    assert_eq!(
        std::fs::read(&vault).unwrap(),
        b"",
        "the helper's copy is erased"
    );
    let text = std::fs::read_to_string(h.auth_file()).unwrap();
    assert!(
        !text.contains(&reg.host()) && text.contains("other:1"),
        "{text}"
    );

    // Logged out: the helper's `get` finds nothing, the file has nothing, the pull is refused.
    let e = registry::pull(&open_store(h.dir.path(), "b"), &name, &opts).unwrap_err();
    assert!(matches!(e, registry::Error::Unauthorized { .. }), "{e}");
    // Nothing left to remove.
    assert!(
        registry::remove_credentials_with(
            &h.auth_file(),
            &reg.host(),
            opts.registry.helper_path.as_deref()
        )
        .unwrap()
        .is_empty()
    );
}
