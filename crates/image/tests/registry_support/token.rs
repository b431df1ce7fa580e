//! A token server for `docker-registry` configured with `auth: token` (distribution's token
//! spec): `GET /token?service=…&scope=repository:NAME:pull,push&…` with optional basic
//! credentials answers `{"token": JWT}`. The JWTs are real: RS256, signed with `openssl dgst`
//! by a key whose self-signed certificate is the registry's `rootcertbundle`, carried in the
//! `x5c` header. Scopes are honoured per user; repositories under `public/` are pullable
//! anonymously. Token lifetime is adjustable to test expiry.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{FakeServer, Resp, have, skip_or_fail, tempdir};

/// The `service` (JWT audience) the registry is configured with.
pub const SERVICE: &str = "berth-test-registry";
/// The `issuer` the registry trusts.
pub const ISSUER: &str = "berth-test-token-issuer";
/// distribution 2.8 accepts a token up to this many seconds after its `exp` (`token.Leeway`).
pub const REGISTRY_LEEWAY_SECS: i64 = 60;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `pull` and `push` on every repository.
    PullPush,
    /// `pull` only.
    PullOnly,
}

/// The token server (a [`FakeServer`]) and its signing material.
pub struct TokenServer {
    pub server: FakeServer,
    pub dir: tempfile::TempDir,
    /// The certificate the registry trusts (its `rootcertbundle`).
    pub cert: PathBuf,
    /// Tokens issued so far (anonymous ones included).
    pub issued: Arc<AtomicUsize>,
    /// Seconds a token stays usable at the registry, counted from issue (its leeway included).
    pub lifetime: Arc<AtomicI64>,
    /// The `expires_in` answered; negative: `lifetime` (the truth). A larger value makes the
    /// client trust a token the registry already refuses.
    pub advertised: Arc<AtomicI64>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The actions `grant` (or anonymity, with `None`) allows on `name` out of `wanted`.
fn allowed(grant: Option<Grant>, name: &str, wanted: &[&str]) -> Vec<String> {
    wanted
        .iter()
        .filter(|a| match (grant, **a) {
            (Some(Grant::PullPush), "pull" | "push") => true,
            (Some(Grant::PullOnly), "pull") => true,
            (None, "pull") => name.starts_with("public/"),
            _ => false,
        })
        .map(|a| (*a).to_owned())
        .collect()
}

fn sign(key: &Path, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}

impl TokenServer {
    /// Starts a token server knowing `users` (name, password, grant). `None` after a skip when
    /// openssl is missing.
    pub fn start(users: &[(&str, &str, Grant)]) -> Option<TokenServer> {
        if !have("openssl") {
            skip_or_fail("openssl is not installed (apt-get install openssl)");
            return None;
        }
        let dir = tempdir("berth-token-server-");
        let (key, cert) = (dir.path().join("token.key"), dir.path().join("token.crt"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=berth test token signer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success());
        let x5c = b64(false, &der.stdout);
        let users: BTreeMap<String, (String, Grant)> = users
            .iter()
            .map(|(u, p, g)| ((*u).to_owned(), ((*p).to_owned(), *g)))
            .collect();
        let issued = Arc::new(AtomicUsize::new(0));
        let lifetime = Arc::new(AtomicI64::new(300));
        let advertised = Arc::new(AtomicI64::new(-1));
        let (iss, life, adv) = (issued.clone(), lifetime.clone(), advertised.clone());
        let server = FakeServer::start(move |req| {
            let Some(query) = req.path.strip_prefix("/token") else {
                return Resp::new(404);
            };
            let query = query.trim_start_matches('?');
            // Basic login: a wrong or unknown user is refused; no credentials is anonymous.
            let grant = match req.header("authorization") {
                None => None,
                Some(h) => {
                    let decoded = h
                        .strip_prefix("Basic ")
                        .and_then(|b| unb64(b.trim()))
                        .and_then(|b| String::from_utf8(b).ok());
                    let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                        return Resp::new(401).body("bad authorization");
                    };
                    match users.get(u) {
                        Some((pw, g)) if pw == p => Some(*g),
                        _ => return Resp::new(401).body("wrong user name or password"),
                    }
                }
            };
            let subject = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Basic "))
                .and_then(|b| unb64(b.trim()))
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|d| d.split_once(':').map(|(u, _)| u.to_owned()))
                .unwrap_or_default();
            let mut service = None;
            let mut access = Vec::new();
            for pair in query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v);
                match k {
                    "service" => service = Some(v),
                    "scope" => {
                        for scope in v.split(' ') {
                            let Some((kind, rest)) = scope.split_once(':') else {
                                continue;
                            };
                            let Some((name, actions)) = rest.rsplit_once(':') else {
                                continue;
                            };
                            let wanted: Vec<&str> = actions.split(',').collect();
                            let actions = if kind == "repository" {
                                allowed(grant, name, &wanted)
                            } else {
                                Vec::new()
                            };
                            access.push(serde_json::json!({
                                "type": kind, "name": name, "actions": actions,
                            }));
                        }
                    }
                    _ => {}
                }
            }
            if service.as_deref() != Some(SERVICE) {
                return Resp::new(400).body("unknown service");
            }
            let t = now();
            let lifetime = life.load(Ordering::SeqCst);
            let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": ISSUER,
                "sub": subject,
                "aud": SERVICE,
                // The registry adds its leeway to `exp`: take it off so the token is usable
                // for `lifetime` seconds.
                "exp": t + lifetime - REGISTRY_LEEWAY_SECS,
                "nbf": t - 1,
                "iat": t,
                "jti": format!("{t}-{}", iss.load(Ordering::SeqCst)),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64(true, header.to_string()),
                b64(true, claims.to_string())
            );
            let signature = sign(&key, signing_input.as_bytes());
            let token = format!("{signing_input}.{}", b64(true, signature));
            iss.fetch_add(1, Ordering::SeqCst);
            let expires_in = match adv.load(Ordering::SeqCst) {
                n if n < 0 => lifetime,
                n => n,
            };
            Resp::new(200)
                .header("Content-Type", "application/json")
                .body(serde_json::json!({"token": token, "expires_in": expires_in}).to_string())
        });
        Some(TokenServer {
            server,
            dir,
            cert,
            issued,
            lifetime,
            advertised,
        })
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.host())
    }

    /// The registry's `auth:` configuration block for this server.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.cert.display()
        )
    }

    /// Requests made to the token endpoint so far.
    pub fn token_requests(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .count()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 (standard alphabet, padded) or base64url without padding (JWT).
fn b64(url: bool, data: impl AsRef<[u8]>) -> String {
    let mut out = String::new();
    for chunk in data.as_ref().chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                let c = B64[((v >> (18 - 6 * i)) & 63) as usize];
                out.push(match (url, c) {
                    (true, b'+') => '-',
                    (true, b'/') => '_',
                    (_, c) => c as char,
                });
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64.
fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
