//! containerd's registry host configuration: `<hosts_dir>/<host[:port]>/hosts.toml`
//! (`/etc/containerd/certs.d` layout; `<hosts_dir>/_default/hosts.toml` for hosts without
//! their own), read when [`super::RegistryOptions::hosts_dir`] is set.
//!
//! ```toml
//! server = "https://registry.example:5000"      # the upstream (default https://<host>)
//! ca = "upstream-ca.crt"                        # settings of the upstream itself
//!
//! [host."http://127.0.0.1:5001"]                # mirrors, tried in file order
//!   capabilities = ["pull", "resolve"]          # default: pull, resolve, push
//! [host."https://mirror.example/registry/v2/proxy"]
//!   override_path = true                        # the URL path is the API root as is
//!   ca = ["mirror-ca.crt"]                      # a path or a list; relative to this dir
//!   client = [["client.cert", "client.key"]]    # a file with both, a pair, or pairs
//!   skip_verify = true                          # no certificate verification at all
//!   dial_timeout = "1s"                         # bound on connecting (default 30s)
//!   [host."https://mirror.example/registry/v2/proxy".header]
//!     x-mirror-token = "abc"                    # a string or a list (several lines)
//!
//! [header]                                      # headers of the upstream
//!   x-custom = ["a", "b"]
//! ```
//!
//! The endpoints of a host are its `[host."…"]` entries in order, then the upstream
//! (`server`, with the top-level `capabilities`, `ca`, `client`, `skip_verify`,
//! `override_path`, `header`, `dial_timeout`). As in containerd, the top-level settings are
//! the upstream's own: a mirror gets only the settings of its `[host."…"]` table, so a
//! header meant for the upstream (a token, say) never reaches a mirror.
//!
//! **Headers** (`header`) go on every request to that endpoint's host (manifests, blobs,
//! uploads, `GET /v2/`) and on its bearer token requests, never to another host a redirect
//! leads to. A header the request itself sets (`Accept`, `Range`, `Content-Type`) replaces a
//! configured one of the same name. A configured `Authorization` is sent as it is until our
//! authentication flow answers a challenge; from then on the flow's `Authorization` replaces
//! it (containerd: the authorizer `Set`s it over the configured headers); it is not sent to a
//! token realm. Names that frame the message (`Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`, …) are refused.
//!
//! **`ns`**: every repository request to a mirror carries the query parameter
//! `ns=<registry of the reference>` (`?ns=docker.io`), as containerd's do, so a pull-through
//! cache that serves several upstreams knows which one is meant; the upstream gets none.
//!
//! **`dial_timeout`** is a Go duration (`"500ms"`, `"1s"`, `"1m30s"`), the connect timeout
//! of that endpoint's client (ureq counts the TLS handshake in it); `"0s"` means no bound.
//!
//! A URL without a path gets `/v2` (a path gets `/v2` appended unless it
//! ends so or `override_path` is set). The scheme of each URL decides plain HTTP or TLS.
//! Without a `hosts.toml` the host has one endpoint, the upstream, as before
//! (`plain_http` / `insecure_hosts`, `certs_dir`).
//!
//! How they are used (as containerd does): a tag is resolved on the first endpoint with the
//! `resolve` capability that answers; a digest on those with `pull`. Every later request of
//! the pull (child manifests, config, each layer) goes to the endpoints with `pull` in order,
//! handing *that request* over to the next on a failure of the host (unreachable, refused,
//! 404, 5xx, bad bytes; see `fallback`); a layer resumes with `Range` on the next host from
//! what its ingest holds. Push goes to the first endpoint with `push`. Credentials: the
//! upstream's are the configured ones; a mirror gets only what the auth file holds for the mirror's own host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::http::{HeaderName, HeaderValue};

use super::error::{Error, Result};
use super::{RegistryOptions, registry_host};

/// The most bytes of a `hosts.toml` read.
const MAX_HOSTS_TOML: u64 = 1 << 20;
/// The connect timeout without a `dial_timeout` (containerd's default too).
pub(crate) const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Header names a `hosts.toml` may not set: they frame the message or the connection.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Extra headers sent to one endpoint, in file order (a name may repeat). `Debug` shows the
/// names only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(pub Vec<(HeaderName, HeaderValue)>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k.as_str()))
            .finish()
    }
}

/// What an endpoint may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub(crate) const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One place a host's repositories can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` requests go to.
    pub authority: String,
    /// The API root path (`/v2`, or an overridden path), without a trailing `/`.
    pub api_root: String,
    pub capabilities: Capabilities,
    /// CA files trusted for this endpoint (besides the options' own).
    pub ca_files: Vec<PathBuf>,
    /// A client certificate and its key (the same file when it holds both).
    pub client: Option<(PathBuf, PathBuf)>,
    /// No certificate verification.
    pub skip_verify: bool,
    /// Whether this is the upstream (`server`) rather than a mirror.
    pub upstream: bool,
    /// Headers added to every request to this endpoint (`header`).
    pub headers: Headers,
    /// The connect timeout (`dial_timeout`); `None`: no bound.
    pub dial_timeout: Option<Duration>,
}

impl Endpoint {
    /// The registry `domain` itself with every capability, as `opts` reach it (plain HTTP only
    /// when named), before any `hosts.toml` says more.
    pub(crate) fn upstream(opts: &RegistryOptions, domain: &str) -> Endpoint {
        Endpoint {
            scheme: if opts.is_plain(domain) {
                "http"
            } else {
                "https"
            },
            authority: registry_host(domain).to_owned(),
            api_root: "/v2".to_owned(),
            capabilities: Capabilities::ALL,
            ca_files: Vec::new(),
            client: None,
            skip_verify: false,
            upstream: true,
            headers: Headers::default(),
            dial_timeout: Some(DEFAULT_DIAL_TIMEOUT),
        }
    }
}

/// The endpoints for `domain` (mirrors in order, then the upstream).
///
/// # Errors
/// [`Error::HostsConfig`] for an unreadable or malformed `hosts.toml`.
pub(crate) fn endpoints(opts: &RegistryOptions, domain: &str) -> Result<Vec<Endpoint>> {
    let default_upstream = Endpoint::upstream(opts, domain);
    let Some(dir) = &opts.hosts_dir else {
        return Ok(vec![default_upstream]);
    };
    if domain.is_empty() || domain.contains('/') || domain == "." || domain == ".." {
        return Ok(vec![default_upstream]);
    }
    let Some((file, text)) = [dir.join(domain), dir.join("_default")]
        .into_iter()
        .map(|d| d.join("hosts.toml"))
        .find_map(|f| read_capped(&f).transpose().map(|t| t.map(|t| (f, t))))
        .transpose()?
    else {
        return Ok(vec![default_upstream]);
    };
    parse(&file, &text, default_upstream)
}

fn read_capped(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut text = String::new();
    f.take(MAX_HOSTS_TOML + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read", path, e))?;
    if text.len() as u64 > MAX_HOSTS_TOML {
        return Err(bad(path, format!("larger than {MAX_HOSTS_TOML} bytes")));
    }
    Ok(Some(text))
}

fn bad(path: &Path, reason: String) -> Error {
    Error::HostsConfig {
        path: path.to_path_buf(),
        reason,
    }
}

/// Parses a `hosts.toml` read from `file`; `upstream` is the default upstream endpoint.
fn parse(file: &Path, text: &str, upstream: Endpoint) -> Result<Vec<Endpoint>> {
    let table: toml::Table = text.parse().map_err(|e| bad(file, format!("{e}")))?;
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = hosts
            .as_table()
            .ok_or_else(|| bad(file, "`host` is not a table".into()))?;
        for (url, settings) in hosts {
            let settings = settings
                .as_table()
                .ok_or_else(|| bad(file, format!("host {url:?} is not a table")))?;
            out.push(endpoint(file, base, url, settings, false)?);
        }
    }
    let server = match table.get("server") {
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| bad(file, "`server` is not a string".into()))?
                .to_owned(),
        ),
        None => None,
    };
    let mut up = match &server {
        Some(url) => endpoint(file, base, url, &table, true)?,
        None => {
            let mut e = endpoint(
                file,
                base,
                &format!("{}://{}", upstream.scheme, upstream.authority),
                &table,
                true,
            )?;
            e.scheme = upstream.scheme;
            e
        }
    };
    up.upstream = true;
    out.push(up);
    Ok(out)
}

fn strings(file: &Path, key: &str, v: &toml::Value) -> Result<Vec<String>> {
    match v {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(file, format!("`{key}` holds a non-string")))
            })
            .collect(),
        _ => Err(bad(file, format!("`{key}` is not a string or a list"))),
    }
}

fn endpoint(
    file: &Path,
    base: &Path,
    url: &str,
    settings: &toml::Table,
    upstream: bool,
) -> Result<Endpoint> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", r)) => ("http", r),
        Some(("https", r)) => ("https", r),
        Some((s, _)) => return Err(bad(file, format!("{url:?}: unsupported scheme {s:?}"))),
        None => ("https", url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['?', '#', '@']) {
        return Err(bad(file, format!("{url:?}: no usable host")));
    }
    let flag = |key: &str| -> Result<bool> {
        match settings.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(file, format!("{url:?}: `{key}` is not a boolean"))),
        }
    };
    let override_path = flag("override_path")?;
    let api_root = if override_path || path.ends_with("/v2") {
        path.to_owned()
    } else {
        format!("{path}/v2")
    };
    let capabilities = match settings.get("capabilities") {
        None => Capabilities::ALL,
        Some(v) => {
            let mut c = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for cap in strings(file, "capabilities", v)? {
                match cap.as_str() {
                    "pull" => c.pull = true,
                    "resolve" => c.resolve = true,
                    "push" => c.push = true,
                    other => {
                        return Err(bad(file, format!("{url:?}: unknown capability {other:?}")));
                    }
                }
            }
            c
        }
    };
    let resolve_path = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let ca_files = match settings.get("ca") {
        None => Vec::new(),
        Some(v) => strings(file, "ca", v)?
            .iter()
            .map(|p| resolve_path(p))
            .collect(),
    };
    let client = match settings.get("client") {
        None => None,
        Some(toml::Value::String(both)) => Some((resolve_path(both), resolve_path(both))),
        Some(toml::Value::Array(items)) => {
            let pair = |a: &[toml::Value]| -> Result<(PathBuf, PathBuf)> {
                match a {
                    [toml::Value::String(c)] => Ok((resolve_path(c), resolve_path(c))),
                    [toml::Value::String(c), toml::Value::String(k)] => {
                        Ok((resolve_path(c), resolve_path(k)))
                    }
                    _ => Err(bad(
                        file,
                        format!("{url:?}: `client` wants [cert, key] or [[cert, key], …]"),
                    )),
                }
            };
            match items.first() {
                None => None,
                // [[cert, key], …]: the first pair (one client certificate is presented).
                Some(toml::Value::Array(first)) => Some(pair(first)?),
                Some(_) => Some(pair(items)?),
            }
        }
        Some(_) => {
            return Err(bad(
                file,
                format!("{url:?}: `client` is not a path or a list"),
            ));
        }
    };
    let headers = match settings.get("header") {
        None => Headers::default(),
        Some(v) => headers(file, url, v)?,
    };
    let dial_timeout = match settings.get("dial_timeout") {
        None => Some(DEFAULT_DIAL_TIMEOUT),
        Some(toml::Value::String(s)) => {
            let d = parse_go_duration(s).ok_or_else(|| {
                bad(
                    file,
                    format!("{url:?}: `dial_timeout` {s:?} is not a duration such as \"1s\" or \"500ms\""),
                )
            })?;
            (!d.is_zero()).then_some(d)
        }
        Some(_) => {
            return Err(bad(
                file,
                format!("{url:?}: `dial_timeout` is not a string (a duration such as \"1s\")"),
            ));
        }
    };
    Ok(Endpoint {
        scheme,
        authority: authority.to_owned(),
        api_root,
        capabilities,
        ca_files,
        client,
        skip_verify: flag("skip_verify")?,
        upstream,
        headers,
        dial_timeout,
    })
}

/// Parses a `header` table: each key a header name, each value a string or a list of strings.
fn headers(file: &Path, url: &str, v: &toml::Value) -> Result<Headers> {
    let table = v
        .as_table()
        .ok_or_else(|| bad(file, format!("{url:?}: `header` is not a table")))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
            bad(
                file,
                format!("{url:?}: `header.{key}` is not a header name"),
            )
        })?;
        if FORBIDDEN_HEADERS.contains(&name.as_str()) {
            return Err(bad(
                file,
                format!("{url:?}: `header.{key}` may not be set (it frames the HTTP message)"),
            ));
        }
        let values = match value {
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str().ok_or_else(|| {
                        bad(file, format!("{url:?}: `header.{key}` holds a non-string"))
                    })
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(bad(
                    file,
                    format!("{url:?}: `header.{key}` is not a string or a list of strings"),
                ));
            }
        };
        for s in values {
            let value = HeaderValue::from_str(s).map_err(|_| {
                bad(
                    file,
                    format!("{url:?}: `header.{key}` has a value that is not a valid header value"),
                )
            })?;
            out.push((name.clone(), value));
        }
    }
    Ok(Headers(out))
}

/// Parses a Go `time.Duration` string: an optional sign, then one or more decimal numbers
/// each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `1.5s`, `1m30s`; `0` alone
/// is zero. `None` for anything else, a negative duration, or an overflow.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut ns = int.checked_mul(unit_ns)?;
        // The fraction, digit by digit (as Go does, precision beyond 1 ns dropped).
        let mut scale = unit_ns;
        for d in frac.bytes() {
            scale /= 10;
            ns = ns.checked_add(u128::from(d - b'0') * scale)?;
        }
        total = total.checked_add(ns)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> RegistryOptions {
        RegistryOptions {
            hosts_dir: Some(dir.to_path_buf()),
            ..RegistryOptions::default()
        }
    }

    #[test]
    fn without_hosts_toml_the_upstream_alone() {
        let dir = tempfile::tempdir().unwrap();
        let eps = endpoints(&opts(dir.path()), "docker.io").unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].authority, "registry-1.docker.io");
        assert_eq!((eps[0].scheme, eps[0].api_root.as_str()), ("https", "/v2"));
        let plain = RegistryOptions {
            insecure_hosts: vec!["h:1".into()],
            ..opts(dir.path())
        };
        assert_eq!(endpoints(&plain, "h:1").unwrap()[0].scheme, "http");
    }

    #[test]
    fn parses_mirrors_in_order_then_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(
            host.join("hosts.toml"),
            r#"
server = "https://reg.example:5000"
ca = "/abs/up.crt"

[host."http://127.0.0.1:7000"]
  capabilities = ["pull", "resolve"]

[host."https://a.mirror/base/v2/proxy"]
  capabilities = ["pull"]
  override_path = true
  ca = ["m.crt", "/x/n.crt"]
  client = [["c.cert", "c.key"]]
  skip_verify = true

[host."https://b.mirror/sub"]
  client = "both.pem"
"#,
        )
        .unwrap();
        let eps = endpoints(&opts(dir.path()), "reg.example:5000").unwrap();
        let got: Vec<_> = eps
            .iter()
            .map(|e| {
                (
                    e.scheme,
                    e.authority.as_str(),
                    e.api_root.as_str(),
                    e.upstream,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("http", "127.0.0.1:7000", "/v2", false),
                ("https", "a.mirror", "/base/v2/proxy", false),
                ("https", "b.mirror", "/sub/v2", false),
                ("https", "reg.example:5000", "/v2", true),
            ]
        );
        assert!(!eps[0].capabilities.push && eps[0].capabilities.resolve);
        assert!(eps[1].capabilities.pull && !eps[1].capabilities.resolve);
        assert!(eps[1].skip_verify && !eps[0].skip_verify);
        assert_eq!(
            eps[1].ca_files,
            vec![host.join("m.crt"), PathBuf::from("/x/n.crt")]
        );
        assert_eq!(
            eps[1].client,
            Some((host.join("c.cert"), host.join("c.key")))
        );
        assert_eq!(
            eps[2].client,
            Some((host.join("both.pem"), host.join("both.pem")))
        );
        assert_eq!(eps[3].ca_files, vec![PathBuf::from("/abs/up.crt")]);
        assert_eq!(eps[3].capabilities, Capabilities::ALL);

        // `_default` serves hosts without their own; bad files are clear errors.
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "[host.\"http://m:1\"]\ncapabilities = [\"pull\"]\n",
        )
        .unwrap();
        let eps = endpoints(&opts(dir.path()), "other:1").unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].authority, "other:1");
        std::fs::write(host.join("hosts.toml"), "server = 3\n").unwrap();
        let e = endpoints(&opts(dir.path()), "reg.example:5000").unwrap_err();
        assert!(e.to_string().contains("hosts.toml"), "{e}");
        std::fs::write(host.join("hosts.toml"), "[host.\"ftp://x\"]\n").unwrap();
        assert!(endpoints(&opts(dir.path()), "reg.example:5000").is_err());
        std::fs::write(host.join("hosts.toml"), "not toml [").unwrap();
        assert!(endpoints(&opts(dir.path()), "reg.example:5000").is_err());
    }

    #[test]
    fn headers_and_dial_timeout_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("h:1");
        std::fs::create_dir_all(&host).unwrap();
        let write = |text: &str| std::fs::write(host.join("hosts.toml"), text).unwrap();
        write(
            r#"
server = "http://h:1"
dial_timeout = "1m30s"
[header]
  x-both = "top"
  x-list = ["a", "b"]

[host."http://m:2"]
  dial_timeout = "250ms"
  [host."http://m:2".header]
    x-both = "mirror"

[host."http://n:3"]
  dial_timeout = "0s"
"#,
        );
        let eps = endpoints(&opts(dir.path()), "h:1").unwrap();
        let hdrs = |e: &Endpoint| -> Vec<(String, String)> {
            e.headers
                .0
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect()
        };
        // A mirror has its own headers only; the top-level ones are the upstream's.
        assert_eq!(hdrs(&eps[0]), vec![("x-both".into(), "mirror".into())]);
        assert_eq!(eps[0].dial_timeout, Some(Duration::from_millis(250)));
        assert!(hdrs(&eps[1]).is_empty());
        assert_eq!(eps[1].dial_timeout, None, "0s: no bound");
        assert_eq!(
            hdrs(&eps[2]),
            vec![
                ("x-both".into(), "top".into()),
                ("x-list".into(), "a".into()),
                ("x-list".into(), "b".into()),
            ]
        );
        assert_eq!(eps[2].dial_timeout, Some(Duration::from_secs(90)));
        assert!(format!("{:?}", eps[2].headers).contains("x-list"));

        // Bad values: InvalidArgument naming the file and the key.
        for (text, key) in [
            ("dial_timeout = \"soon\"\n", "dial_timeout"),
            ("dial_timeout = 5\n", "dial_timeout"),
            ("dial_timeout = \"-1s\"\n", "dial_timeout"),
            (
                "[host.\"http://m:2\"]\ndial_timeout = \"1x\"\n",
                "dial_timeout",
            ),
            ("header = 3\n", "header"),
            ("[header]\n\"bad name\" = \"x\"\n", "header.bad name"),
            ("[header]\nx-a = \"line\\nbreak\"\n", "header.x-a"),
            ("[header]\nx-a = 1\n", "header.x-a"),
            ("[header]\nx-a = [\"ok\", 2]\n", "header.x-a"),
            ("[header]\nHost = \"evil\"\n", "header.Host"),
            (
                "[header]\ncontent-length = \"1\"\n",
                "header.content-length",
            ),
        ] {
            write(text);
            let e = endpoints(&opts(dir.path()), "h:1").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{text}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("h:1/hosts.toml"), "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{text}: {msg}");
        }
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (s, d) in [
            ("1s", Duration::from_secs(1)),
            ("500ms", ms(500)),
            ("1.5s", ms(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("300us", Duration::from_micros(300)),
            ("300µs", Duration::from_micros(300)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", ms(500)),
            ("0", Duration::ZERO),
            ("+1s", Duration::from_secs(1)),
        ] {
            assert_eq!(parse_go_duration(s), Some(d), "{s}");
        }
        for s in [
            "",
            "1",
            "s",
            "1.2.3s",
            "-1s",
            "1d",
            "1 s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(s), None, "{s}");
        }
    }
}
