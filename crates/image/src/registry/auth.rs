//! Credentials and challenges.
//!
//! * **Auth file**: docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!   `~/.docker/config.json`). Looked up as docker does ([`credentials_from_file_with`]):
//!   `credHelpers.<host>` names a helper for that host; else `credsStore` names the helper
//!   for every host; else `auths.<host>` holds `auth` (base64 of `user:password`) or an
//!   `identitytoken`. Helpers speak docker's protocol ([`super::helper`]). A `credsStore`
//!   whose program is missing falls back to `auths` (with a warning); a missing
//!   `credHelpers` program is an error. [`save_credentials_with`] stores through the same
//!   helper (`store`), else [`save_credentials`] writes the inline form with mode 0600, through
//!   a temporary file renamed into place, keeping the other keys. [`remove_credentials_with`]
//!   (`berth logout`) erases them from that helper (`erase`) and drops every inline entry
//!   for the host, so no stale copy keeps authenticating.
//! * **Identity tokens**: credentials whose user name is `<token>` (docker's convention)
//!   carry an OAuth2 refresh token, exchanged at the bearer realm (`grant_type=refresh_token`)
//!   instead of sent as basic credentials.
//! * **Challenges**: a `WWW-Authenticate` header is parsed into a scheme and its parameters
//!   (`Bearer realm="…",service="…",scope="…"`, `Basic realm="…"`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::{Error, Result};
use super::helper;

/// The user name that marks the password as an identity token (docker's convention).
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or identity token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Whether the password is an identity token (user name `<token>`).
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }

    /// The value of a `Authorization: Basic …` header.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The default auth file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The keys an auth file may use for `host` (docker.io has legacy spellings).
fn host_keys(host: &str) -> Vec<String> {
    let mut keys = vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" || host == "registry-1.docker.io" {
        keys.push("https://index.docker.io/v1/".to_owned());
        keys.push("index.docker.io".to_owned());
        keys.push("registry-1.docker.io".to_owned());
        keys.push("docker.io".to_owned());
    }
    keys
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    if bytes.len() > 4 << 20 {
        return Err(Error::AuthFile {
            path: path.to_path_buf(),
            reason: "larger than 4 MiB".into(),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::AuthFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The credentials the auth file at `path` gives for `host`, if any (a missing file gives
/// none), running credential helpers found in `$PATH`. See
/// [`credentials_from_file_with`].
///
/// # Errors
/// As [`credentials_from_file_with`].
pub fn credentials_from_file(path: &Path, host: &str) -> Result<Option<Credentials>> {
    credentials_from_file_with(path, host, None)
}

/// The server name a helper is asked about for `host` (docker's: the host, or the legacy
/// index URL for Docker Hub).
fn helper_server(host: &str) -> String {
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        "https://index.docker.io/v1/".to_owned()
    } else {
        host.to_owned()
    }
}

/// The credentials the auth file at `path` gives for `host`: `credHelpers`, then
/// `credsStore`, then inline `auths` (see the module docs). Helpers are looked up in
/// `helper_path` (`PATH` format) and run with it as their `PATH`; `None` is the process's
/// `PATH`.
///
/// # Errors
/// [`Error::AuthFile`] for a malformed file or entry; [`Error::CredentialHelper`] when a
/// helper fails (a helper that has no credentials for `host` is not an error);
/// [`Error::Io`].
pub fn credentials_from_file_with(
    path: &Path,
    host: &str,
    helper_path: Option<&OsStr>,
) -> Result<Option<Credentials>> {
    let Some(json) = read_json(path)? else {
        return Ok(None);
    };
    let server = helper_server(host);
    if let Some(helpers) = json.get("credHelpers").and_then(|h| h.as_object()) {
        for key in host_keys(host) {
            if let Some(name) = helpers.get(&key).and_then(|n| n.as_str()) {
                return helper::helper_credentials(name, &server, helper_path);
            }
        }
    }
    if let Some(store) = json
        .get("credsStore")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
    {
        if helper::helper_exists(store, helper_path) {
            if let Some(c) = helper::helper_credentials(store, &server, helper_path)? {
                return Ok(Some(c));
            }
        } else {
            tracing::warn!(
                helper = format!("docker-credential-{store}"),
                "credsStore helper not found; using the auth file's inline entries"
            );
        }
    }
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for key in host_keys(host) {
        let Some(entry) = auths.get(&key) else {
            continue;
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials {
                username: IDENTITY_TOKEN_USER.to_owned(),
                password: token.to_owned(),
            }));
        }
        let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else {
            continue;
        };
        let bad = |reason: &str| Error::AuthFile {
            path: path.to_path_buf(),
            reason: format!("auths.{key}.auth: {reason}"),
        };
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
        let (user, pass) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        return Ok(Some(Credentials {
            username: user.to_owned(),
            password: pass.to_owned(),
        }));
    }
    Ok(None)
}

/// Where [`save_credentials_with`] put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SavedIn {
    /// Inline in the auth file.
    File(PathBuf),
    /// In a credential helper (the program's name).
    Helper(String),
}

/// Stores `creds` for `host` as `docker login` does: through the helper the auth file names
/// for `host` (`credHelpers`, else `credsStore`; run from `helper_path` as in
/// [`credentials_from_file_with`]), else inline in the file ([`save_credentials`]). A
/// `credsStore` whose program is missing falls back to the file, with a warning.
///
/// # Errors
/// [`Error::AuthFile`] for a malformed file; [`Error::CredentialHelper`] when the helper
/// fails; [`Error::Io`].
pub fn save_credentials_with(
    path: &Path,
    host: &str,
    creds: &Credentials,
    helper_path: Option<&OsStr>,
) -> Result<SavedIn> {
    let json = read_json(path)?.unwrap_or_else(|| serde_json::json!({}));
    let helper = helper_for(&json, host, helper_path);
    if helper.is_none()
        && let Some(s) = configured_store(&json)
    {
        tracing::warn!(
            helper = format!("docker-credential-{s}"),
            "credsStore helper not found; storing in the auth file"
        );
    }
    match helper {
        Some(name) => {
            helper::helper_store(&name, &helper_server(host), creds, helper_path)?;
            Ok(SavedIn::Helper(format!("docker-credential-{name}")))
        }
        None => {
            save_credentials(path, host, creds)?;
            Ok(SavedIn::File(path.to_path_buf()))
        }
    }
}

/// Stores `creds` for `host` in the auth file at `path` (created with its directory if
/// missing), keeping every other entry and key. The file is written mode 0600 to a temporary
/// name and renamed into place.
///
/// # Errors
/// [`Error::AuthFile`] when the existing file is not a JSON object; [`Error::Io`].
pub fn save_credentials(path: &Path, host: &str, creds: &Credentials) -> Result<()> {
    let mut json = read_json(path)?.unwrap_or_else(|| serde_json::json!({}));
    let Some(obj) = json.as_object_mut() else {
        return Err(Error::AuthFile {
            path: path.to_path_buf(),
            reason: "not a JSON object".into(),
        });
    };
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let Some(auths) = auths.as_object_mut() else {
        return Err(Error::AuthFile {
            path: path.to_path_buf(),
            reason: "auths is not an object".into(),
        });
    };
    let encoded = STANDARD.encode(format!("{}:{}", creds.username, creds.password));
    auths.insert(host.to_owned(), serde_json::json!({ "auth": encoded }));
    write_json(path, &json)
}

/// Writes `json` to `path` (directory created if missing) mode 0600 through a temporary file
/// renamed into place.
fn write_json(path: &Path, json: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(json).map_err(|e| Error::AuthFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let tmp = dir.join(format!(
        ".config.json.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// The helper the auth file names for `host` (`credHelpers`, else an existing `credsStore`).
fn helper_for(json: &serde_json::Value, host: &str, helper_path: Option<&OsStr>) -> Option<String> {
    let per_host = json
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            host_keys(host)
                .iter()
                .find_map(|k| h.get(k).and_then(|n| n.as_str()).map(str::to_owned))
        });
    per_host.or_else(|| configured_store(json).filter(|s| helper::helper_exists(s, helper_path)))
}

/// The auth file's `credsStore`, when set.
fn configured_store(json: &serde_json::Value) -> Option<String> {
    json.get("credsStore")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// Removes the credentials for `host` as `docker logout` does: erased from the helper the
/// auth file names for `host` (as [`save_credentials_with`] picks it), and every inline
/// `auths` entry for `host` dropped from the file ([`remove_credentials`]). Returns where
/// credentials were removed from; empty when there were none.
///
/// # Errors
/// [`Error::AuthFile`] for a malformed file; [`Error::CredentialHelper`] when the helper
/// fails (one that has none is not an error); [`Error::Io`].
pub fn remove_credentials_with(
    path: &Path,
    host: &str,
    helper_path: Option<&OsStr>,
) -> Result<Vec<SavedIn>> {
    let json = read_json(path)?.unwrap_or_else(|| serde_json::json!({}));
    let mut removed = Vec::new();
    if let Some(name) = helper_for(&json, host, helper_path)
        && helper::helper_erase(&name, &helper_server(host), helper_path)?
    {
        removed.push(SavedIn::Helper(format!("docker-credential-{name}")));
    }
    if remove_credentials(path, host)? {
        removed.push(SavedIn::File(path.to_path_buf()));
    }
    Ok(removed)
}

/// Drops every inline `auths` entry for `host` (all the keys it may be spelled with) from the
/// auth file at `path`, keeping everything else; rewritten as [`save_credentials`] writes.
/// Returns whether an entry was removed (a missing file has none).
///
/// # Errors
/// [`Error::AuthFile`] for a malformed file; [`Error::Io`].
pub fn remove_credentials(path: &Path, host: &str) -> Result<bool> {
    let Some(mut json) = read_json(path)? else {
        return Ok(false);
    };
    let Some(auths) = json.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let mut removed = false;
    for key in host_keys(host) {
        removed |= auths.remove(&key).is_some();
    }
    if removed {
        write_json(path, &json)?;
    }
    Ok(removed)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `bearer` or `basic` (lower-cased).
    pub scheme: String,
    /// Parameters with lower-cased keys (`realm`, `service`, `scope`, …).
    pub params: BTreeMap<String, String>,
}

/// Parses one challenge (`Scheme k="v", k2=v2`). Returns `None` for an empty header.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        s = &s[eq + 1..];
        let value;
        if let Some(quoted) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            s = &quoted[end.min(quoted.len())..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_owned();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        if !key.is_empty() {
            params.insert(key, value);
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn auth_file_round_trip_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other:1":{"auth":"eDp5"}},"credsStore":"berth-test-missing-x"}"#,
        )
        .unwrap();
        let creds = Credentials {
            username: "me".into(),
            password: "p:w".into(),
        };
        save_credentials(&path, "127.0.0.1:5000", &creds).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            credentials_from_file(&path, "127.0.0.1:5000").unwrap(),
            Some(creds)
        );
        let other = credentials_from_file(&path, "other:1").unwrap().unwrap();
        assert_eq!(
            (other.username.as_str(), other.password.as_str()),
            ("x", "y")
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["credsStore"], "berth-test-missing-x");
        assert_eq!(credentials_from_file(&path, "nowhere").unwrap(), None);
        std::fs::write(&path, r#"{"auths":{"bad":{"auth":"!!!"}}}"#).unwrap();
        assert!(credentials_from_file(&path, "bad").is_err());
    }

    #[test]
    fn remove_credentials_drops_every_spelling_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(
            !remove_credentials(&path, "h:1").unwrap(),
            "no file, nothing removed"
        );
        std::fs::write(
            &path,
            r#"{"auths":{"h:1":{"auth":"eDp5"},"https://h:1":{"auth":"eDp5"},"o:2":{"auth":"eDp5"}},"proxies":{}}"#,
        )
        .unwrap();
        assert!(remove_credentials(&path, "h:1").unwrap());
        assert_eq!(credentials_from_file(&path, "h:1").unwrap(), None);
        assert!(credentials_from_file(&path, "o:2").unwrap().is_some());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(json.get("proxies").is_some());
        assert!(!remove_credentials(&path, "h:1").unwrap(), "already gone");
        // No helper configured: the file alone.
        assert_eq!(
            remove_credentials_with(&path, "o:2", None).unwrap(),
            vec![SavedIn::File(path.clone())]
        );
        assert!(
            remove_credentials_with(&path, "o:2", None)
                .unwrap()
                .is_empty()
        );
    }
}
