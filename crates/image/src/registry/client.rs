//! A thin blocking HTTP client for one repository of one registry: authentication
//! (anonymous, basic, bearer tokens driven by `WWW-Authenticate`), bounded redirects that never
//! carry credentials to another host, and plain HTTP only when asked for.
//!
//! Request bodies are byte slices, so a request answered with 401 can be repeated once with
//! credentials; large uploads are therefore sent in chunks (see `push`).

use std::collections::HashSet;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::{self, HeaderMap, Method, StatusCode};

use super::auth::{Challenge, Credentials, parse_challenge};
use super::error::{Error, Result};
use super::hosts::{Endpoint, Headers};
use super::retry::{Backoff, RetryPolicy, parse_retry_after, transient_status};
use super::token::{self, Token};
use super::{RegistryOptions, tls};

/// Most redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 5;
/// Most bytes of an error body kept for a message.
const ERROR_BODY_CAP: u64 = 4096;

/// A response whose status the caller accepted, with its body still to read.
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The final URL (after redirects).
    pub url: String,
    pub body: ureq::Body,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The declared `Content-Length`, if any.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The body as a reader (no size limit: callers bound it).
    pub(crate) fn into_reader(self) -> impl Read + Send + 'static {
        self.body.into_reader()
    }
}

/// The authorization in use.
#[derive(Clone)]
struct Auth {
    /// The `Authorization` header value.
    header: String,
    /// For a bearer token: the challenge it answered and when to fetch the next one.
    refresh: Option<(Challenge, Instant)>,
}

/// One repository on one registry.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `http` or `https`.
    scheme: &'static str,
    /// The host (and port) requests go to.
    host: String,
    /// The API root path (`/v2`, or a mirror's overridden path), no trailing `/`.
    api_root: String,
    /// The repository path (`library/busybox`).
    pub repo: String,
    /// The scopes a bearer token is asked for.
    scopes: Vec<String>,
    creds: Option<Credentials>,
    /// How transient failures are retried.
    retry: RetryPolicy,
    /// The `Authorization` value that worked last (sent only to `host`), with what is needed
    /// to refresh it before it expires when it is a bearer token.
    authorization: Mutex<Option<Auth>>,
    /// Held while a token is refreshed ahead of its expiry (one refresh at a time).
    refreshing: Mutex<()>,
    /// Headers `hosts.toml` adds to every request to `host` (and its token requests).
    headers: Headers,
    /// The connect timeout (`dial_timeout`), for messages.
    connect_timeout: Option<Duration>,
    /// On a mirror, the registry the reference names (`docker.io`), sent as the `ns` query
    /// parameter of every repository request, as containerd does: a pull-through cache
    /// serving several upstreams tells them apart by it. `None` on the upstream itself.
    namespace: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("repo", &self.repo)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

fn transport(method: &Method, url: &str, e: &ureq::Error, connect: Option<Duration>) -> Error {
    if let Some(reason) = tls::tls_failure(e) {
        return Error::Tls {
            url: url.to_owned(),
            reason,
        };
    }
    let reason = match (e, connect) {
        (ureq::Error::Timeout(ureq::Timeout::Connect), Some(d)) => {
            format!("connect timed out after {d:?} (dial_timeout)")
        }
        _ => e.to_string(),
    };
    Error::Transport {
        method: method_name(method),
        url: url.to_owned(),
        reason,
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "REQUEST",
    }
}

/// The authority (`host[:port]`) of an absolute URL.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Resolves a `Location` against the URL it answered.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.contains("://") {
        return Some(location.to_owned());
    }
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if let Some(rel) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rel}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let dir = match rest[..path_end].rfind('/') {
        Some(i) if i >= authority.len() => &rest[..=i],
        _ => return Some(format!("{scheme}://{authority}/{location}")),
    };
    Some(format!("{scheme}://{dir}{location}"))
}

/// Percent-encodes a query value.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `repo` of the registry `domain` (as in references: `docker.io` is
    /// reached at `registry-1.docker.io`), configured from `opts`: plain HTTP or TLS (extra
    /// roots, client certificate), credentials, retries.
    ///
    /// # Errors
    /// As [`RegistryOptions::credentials_for`]; [`Error::Tls`] and [`Error::Io`] for unusable
    /// certificate files.
    pub(crate) fn new(
        opts: &RegistryOptions,
        domain: &str,
        repo: &str,
        scopes: Vec<String>,
    ) -> Result<Client> {
        let upstream = Endpoint::upstream(opts, domain);
        Client::for_endpoint(opts, domain, &upstream, repo, scopes)
    }

    /// A client for `repo` of the registry `domain` reached at endpoint `ep` (an upstream or
    /// a mirror from `hosts.toml`): its scheme, API root and TLS settings. The upstream gets
    /// the configured credentials; a mirror only the auth file's for its own host.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub(crate) fn for_endpoint(
        opts: &RegistryOptions,
        domain: &str,
        ep: &Endpoint,
        repo: &str,
        scopes: Vec<String>,
    ) -> Result<Client> {
        let creds = if ep.upstream {
            opts.credentials_for(domain)?
        } else {
            match opts.auth_file.clone().or_else(super::default_auth_file) {
                Some(path) => super::credentials_from_file_with(
                    &path,
                    &ep.authority,
                    opts.helper_path.as_deref(),
                )?,
                None => None,
            }
        };
        let tls = if ep.scheme == "https" {
            tls::config_for(opts, ep)?
        } else {
            ureq::tls::TlsConfig::default()
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(ep.dial_timeout)
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            agent,
            scheme: ep.scheme,
            host: ep.authority.clone(),
            api_root: ep.api_root.clone(),
            repo: repo.to_owned(),
            scopes,
            creds,
            retry: opts.retry,
            authorization: Mutex::new(None),
            refreshing: Mutex::new(()),
            headers: ep.headers.clone(),
            connect_timeout: ep.dial_timeout,
            namespace: (!ep.upstream && !domain.is_empty()).then(|| domain.to_owned()),
        })
    }

    /// `scheme://host/v2/` (the API's base; a mirror's may have another path).
    pub(crate) fn base_url(&self) -> String {
        format!("{}://{}{}/", self.scheme, self.host, self.api_root)
    }

    /// Adds a scope asked for in bearer token requests.
    pub(crate) fn add_scope(&mut self, scope: String) {
        if !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
    }

    /// `scheme://host/v2/<repo>/<tail>`, with `?ns=<registry>` on a mirror.
    pub(crate) fn url(&self, tail: &str) -> String {
        self.url_with_query(tail, &[])
    }

    /// [`Client::url`] with the query parameters `query` (escaped here), then `ns` on a
    /// mirror.
    pub(crate) fn url_with_query(&self, tail: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!(
            "{}://{}{}/{}/{tail}",
            self.scheme, self.host, self.api_root, self.repo
        );
        let ns = self.namespace.as_deref().map(|ns| ("ns", ns));
        for (i, (key, value)) in query.iter().copied().chain(ns).enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(key);
            url.push('=');
            url.push_str(&query_escape(value));
        }
        url
    }

    /// Resolves a `Location` from an upload answer against the registry.
    pub(crate) fn absolute(&self, location: &str) -> Result<String> {
        resolve_location(&self.base_url(), location).ok_or_else(|| Error::Protocol {
            url: location.to_owned(),
            reason: "unusable Location".into(),
        })
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|a| a.header.clone()))
    }

    fn set_authorization(&self, header: String, refresh: Option<(Challenge, Instant)>) {
        if let Ok(mut g) = self.authorization.lock() {
            *g = Some(Auth { header, refresh });
        }
    }

    /// Uses a token answering `challenge`, received at `received`.
    fn set_token(&self, token: Token, challenge: &Challenge, received: Instant) {
        let at = token.refresh_at(received);
        self.set_authorization(
            format!("Bearer {}", token.value),
            Some((challenge.clone(), at)),
        );
    }

    /// The challenge of a bearer token due for a refresh, if it is.
    fn refresh_due(&self) -> Option<Challenge> {
        let g = self.authorization.lock().ok()?;
        let (challenge, at) = g.as_ref()?.refresh.as_ref()?;
        (Instant::now() >= *at).then(|| challenge.clone())
    }

    /// Replaces a bearer token that is about to expire ([`token`]) before `url` is asked
    /// for, so the registry need not refuse it first. One thread refreshes, the others wait
    /// for it. A failure is left to the 401 fallback.
    fn refresh_if_due(&self, url: &str) {
        if self.refresh_due().is_none() {
            return;
        }
        let _one = self.refreshing.lock();
        let Some(challenge) = self.refresh_due() else {
            return;
        };
        let received = Instant::now();
        match self.fetch_token(url, &challenge) {
            Ok(token) => {
                tracing::debug!(host = %self.host, lifetime = ?token.lifetime, "bearer token refreshed before it expired");
                self.set_token(token, &challenge, received);
            }
            Err(e) => {
                tracing::debug!(host = %self.host, error = %e, "cannot refresh the bearer token ahead; the registry will say when it expired");
                // Do not try again before the registry refuses it.
                if let Ok(mut g) = self.authorization.lock()
                    && let Some(a) = g.as_mut()
                {
                    a.refresh = None;
                }
            }
        }
    }

    /// Sends one request, following redirects (credentials only to the registry host) and
    /// answering one authentication challenge. Returns the response whatever its status,
    /// except that a 401 after authenticating becomes [`Error::Unauthorized`].
    ///
    /// A request that can be repeated as it is (`GET`, `HEAD`, a manifest `PUT`, anything
    /// without a body) is retried after transient failures ([`super::retry`]) with a fresh
    /// budget; other requests are sent once.
    pub(crate) fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let mut backoff = self.retry.backoff();
        self.send_with(&mut backoff, method, url, headers, body)
    }

    /// A fresh retry budget of this client's policy.
    pub(crate) fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }

    /// Runs `op` until it succeeds, fails for good, or `backoff` is spent, sleeping between
    /// attempts. `op` gets the budget to pass on to [`Client::send_with`].
    pub(crate) fn retrying<T>(
        &self,
        backoff: &mut Backoff,
        what: &str,
        mut op: impl FnMut(&mut Backoff) -> Result<T>,
    ) -> Result<T> {
        loop {
            match op(backoff) {
                Err(e) if e.is_transient() => match backoff.next_delay(e.retry_after()) {
                    Some(wait) => {
                        tracing::debug!(what, error = %e, ?wait, attempt = backoff.attempt(), "transient failure; retrying");
                        std::thread::sleep(wait);
                    }
                    None => return Err(e),
                },
                r => return r,
            }
        }
    }

    /// [`Client::send`] drawing on the caller's budget.
    pub(crate) fn send_with(
        &self,
        backoff: &mut Backoff,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let replayable = method == Method::GET
            || method == Method::HEAD
            || body.is_none_or(<[u8]>::is_empty)
            || (method == Method::PUT && url.contains("/manifests/"));
        loop {
            let result = self.send_once(method.clone(), url, headers, body);
            let wait = match &result {
                _ if !replayable => None,
                Err(e) if e.is_transient() => backoff.next_delay(None),
                Ok(r) if transient_status(r.status.as_u16()) => {
                    backoff.next_delay(r.header("retry-after").and_then(parse_retry_after))
                }
                _ => None,
            };
            let Some(wait) = wait else { return result };
            match &result {
                Ok(r) => tracing::debug!(url, status = r.status.as_u16(), ?wait, "retrying"),
                Err(e) => tracing::debug!(url, error = %e, ?wait, "retrying"),
            }
            drop(result);
            std::thread::sleep(wait);
        }
    }

    /// Sends once (after following redirects and answering a challenge).
    fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        self.refresh_if_due(url);
        let first = self.send_following(&method, url, headers, body)?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .header("www-authenticate")
            .and_then(parse_challenge)
            .ok_or_else(|| Error::Unauthorized {
                url: url.to_owned(),
                reason: "401 without a WWW-Authenticate challenge".into(),
            })?;
        let had = self.current_authorization();
        self.authenticate(url, &challenge)?;
        if had.is_some() && had == self.current_authorization() {
            return Err(Error::Unauthorized {
                url: url.to_owned(),
                reason: "credentials rejected".into(),
            });
        }
        let again = self.send_following(&method, url, headers, body)?;
        if again.status == StatusCode::UNAUTHORIZED {
            let retold = again.header("www-authenticate").and_then(parse_challenge);
            let insufficient = retold.as_ref().and_then(|c| {
                (c.params.get("error").map(String::as_str) == Some("insufficient_scope"))
                    .then(|| c.params.get("scope").cloned().unwrap_or_default())
            });
            return Err(Error::Unauthorized {
                url: url.to_owned(),
                reason: match (insufficient, self.creds.is_some()) {
                    (Some(scope), true) => format!(
                        "the token issued for these credentials does not grant {scope:?} \
                         (insufficient_scope): the account may not do this"
                    ),
                    (Some(scope), false) => format!(
                        "anonymous access does not grant {scope:?} (insufficient_scope): \
                         authentication required and no credentials are configured"
                    ),
                    (None, true) => "credentials rejected".into(),
                    (None, false) => {
                        "authentication required and no credentials are configured".into()
                    }
                },
            });
        }
        Ok(again)
    }

    /// Like [`Client::send`], but any status outside `ok` is an error carrying the body.
    pub(crate) fn send_expect(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<Response> {
        let mut backoff = self.backoff();
        self.send_expect_with(&mut backoff, method, url, headers, body, ok)
    }

    /// [`Client::send_expect`] drawing on the caller's budget.
    pub(crate) fn send_expect_with(
        &self,
        backoff: &mut Backoff,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<Response> {
        let name = method_name(&method);
        let resp = self.send_with(backoff, method, url, headers, body)?;
        if ok.contains(&resp.status.as_u16()) {
            return Ok(resp);
        }
        Err(status_error(name, resp))
    }

    fn send_following(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let mut current = url.to_owned();
        let mut seen = HashSet::new();
        for _ in 0..=MAX_REDIRECTS {
            if !seen.insert(current.clone()) {
                break;
            }
            let mut builder = http::Request::builder()
                .method(method.clone())
                .uri(current.as_str());
            let ours = authority_of(&current) == Some(self.host.as_str());
            // Credentials go to the registry host only, never to a redirect target elsewhere.
            let auth = ours.then(|| self.current_authorization()).flatten();
            if ours {
                // `hosts.toml` headers, except those the request or the auth flow sets.
                for (k, v) in &self.headers.0 {
                    let replaced = headers
                        .iter()
                        .any(|(h, _)| k.as_str().eq_ignore_ascii_case(h))
                        || (auth.is_some() && k == http::header::AUTHORIZATION);
                    if !replaced {
                        builder = builder.header(k, v);
                    }
                }
            }
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            let result = match body {
                Some(b) => builder
                    .body(b)
                    .map_err(|e| protocol(&current, e))
                    .and_then(|r| {
                        self.agent
                            .run(r)
                            .map_err(|e| transport(method, &current, &e, self.connect_timeout))
                    }),
                None => builder
                    .body(())
                    .map_err(|e| protocol(&current, e))
                    .and_then(|r| {
                        self.agent
                            .run(r)
                            .map_err(|e| transport(method, &current, &e, self.connect_timeout))
                    }),
            }?;
            let (parts, body_stream) = result.into_parts();
            let resp = Response {
                status: parts.status,
                headers: parts.headers,
                url: current.clone(),
                body: body_stream,
            };
            let redirect = matches!(resp.status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect || (method != Method::GET && method != Method::HEAD) {
                return Ok(resp);
            }
            let location = resp.header("location").ok_or_else(|| Error::Protocol {
                url: current.clone(),
                reason: format!("{} without Location", resp.status),
            })?;
            current = resolve_location(&current, location).ok_or_else(|| Error::Protocol {
                url: current.clone(),
                reason: format!("unusable Location {location:?}"),
            })?;
            if !current.starts_with("https://") && !current.starts_with("http://") {
                return Err(Error::Protocol {
                    url: current,
                    reason: "redirect to a non-HTTP URL".into(),
                });
            }
        }
        Err(Error::TooManyRedirects {
            url: url.to_owned(),
            max: MAX_REDIRECTS,
        })
    }

    /// Answers a challenge: basic credentials, or a bearer token from the realm.
    fn authenticate(&self, url: &str, challenge: &Challenge) -> Result<()> {
        match challenge.scheme.as_str() {
            "basic" => {
                let creds = self.creds.as_ref().ok_or_else(|| Error::Unauthorized {
                    url: url.to_owned(),
                    reason: "the registry asks for basic credentials and none are configured"
                        .into(),
                })?;
                if creds.is_identity_token() {
                    return Err(Error::Unauthorized {
                        url: url.to_owned(),
                        reason: "the registry asks for basic credentials; an identity token \
                                 only answers a bearer challenge"
                            .into(),
                    });
                }
                self.set_authorization(creds.basic_header(), None);
                Ok(())
            }
            "bearer" => {
                let received = Instant::now();
                let token = self.fetch_token(url, challenge)?;
                self.set_token(token, challenge, received);
                Ok(())
            }
            other => Err(Error::Unauthorized {
                url: url.to_owned(),
                reason: format!("unsupported authentication scheme {other:?}"),
            }),
        }
    }

    /// A request to a token realm carrying the `hosts.toml` headers (as containerd's
    /// authorizer does), except a configured `Authorization` (the realm is another service)
    /// and `Content-Type` (the token request sets its own).
    fn token_request(&self, method: Method, url: &str) -> http::request::Builder {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (k, v) in &self.headers.0 {
            if k != http::header::AUTHORIZATION && k != http::header::CONTENT_TYPE {
                builder = builder.header(k, v);
            }
        }
        builder
    }

    /// The bearer token flow (distribution's token spec): GET `realm?service=…&scope=…`, with
    /// basic credentials when configured; the answer is JSON with `token` or `access_token`
    /// and its lifetime ([`token::parse_answer`]).
    fn fetch_token(&self, url: &str, challenge: &Challenge) -> Result<Token> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| Error::Protocol {
                url: url.to_owned(),
                reason: "bearer challenge without realm".into(),
            })?;
        if !realm.starts_with("https://") && !realm.starts_with("http://") {
            return Err(Error::Protocol {
                url: url.to_owned(),
                reason: format!("bearer realm {realm:?} is not an HTTP URL"),
            });
        }
        let mut query = Vec::new();
        if let Some(service) = challenge.params.get("service") {
            query.push(format!("service={}", query_escape(service)));
        }
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        if let Some(s) = challenge.params.get("scope")
            && !scopes.contains(&s.as_str())
        {
            scopes.push(s);
        }
        let resp = if let Some(c) = self.creds.as_ref().filter(|c| c.is_identity_token()) {
            // OAuth2 refresh-token grant (docker's identity tokens): a form POST to the realm.
            let mut form = vec![
                "grant_type=refresh_token".to_owned(),
                format!("refresh_token={}", query_escape(&c.password)),
                "client_id=berth".to_owned(),
            ];
            if let Some(service) = challenge.params.get("service") {
                form.push(format!("service={}", query_escape(service)));
            }
            if !scopes.is_empty() {
                form.push(format!("scope={}", query_escape(&scopes.join(" "))));
            }
            let body = form.join("&");
            let req = self
                .token_request(Method::POST, realm)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.as_bytes())
                .map_err(|e| protocol(realm, e))?;
            self.agent
                .run(req)
                .map_err(|e| transport(&Method::POST, realm, &e, self.connect_timeout))?
        } else {
            for s in &scopes {
                query.push(format!("scope={}", query_escape(s)));
            }
            let token_url = if query.is_empty() {
                realm.clone()
            } else {
                let sep = if realm.contains('?') { '&' } else { '?' };
                format!("{realm}{sep}{}", query.join("&"))
            };
            let mut builder = self.token_request(Method::GET, &token_url);
            if let Some(c) = &self.creds {
                builder = builder.header("authorization", c.basic_header());
            }
            let req = builder.body(()).map_err(|e| protocol(&token_url, e))?;
            self.agent
                .run(req)
                .map_err(|e| transport(&Method::GET, &token_url, &e, self.connect_timeout))?
        };
        let token_url = realm.clone();
        let status = resp.status();
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Transport {
                method: "GET",
                url: token_url.clone(),
                reason: e.to_string(),
            })?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                url: token_url,
                reason: format!("token endpoint answered {status}"),
            });
        }
        if !status.is_success() {
            return Err(Error::Status {
                method: "GET",
                url: token_url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
                retry_after: None,
            });
        }
        token::parse_answer(&token_url, &bytes, SystemTime::now())
    }
}

fn protocol(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Protocol {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Turns an unexpected response into [`Error::Status`] (401 into [`Error::Unauthorized`]).
pub(crate) fn status_error(method: &'static str, resp: Response) -> Error {
    let status = resp.status.as_u16();
    let url = resp.url.clone();
    let retry_after = resp.header("retry-after").and_then(parse_retry_after);
    let mut body = Vec::new();
    let _ = resp
        .into_reader()
        .take(ERROR_BODY_CAP)
        .read_to_end(&mut body);
    let body = String::from_utf8_lossy(&body)
        .trim()
        .chars()
        .take(512)
        .collect();
    if status == 401 {
        return Error::Unauthorized { url, reason: body };
    }
    Error::Status {
        method,
        url,
        status,
        body,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locations() {
        let base = "http://h:1/v2/a/b/blobs/uploads/x?y=1";
        assert_eq!(
            resolve_location(base, "/v2/a/b/blobs/uploads/z").unwrap(),
            "http://h:1/v2/a/b/blobs/uploads/z"
        );
        assert_eq!(
            resolve_location(base, "https://o/x").unwrap(),
            "https://o/x"
        );
        assert_eq!(
            resolve_location(base, "z?q").unwrap(),
            "http://h:1/v2/a/b/blobs/uploads/z?q"
        );
        assert_eq!(resolve_location(base, "//o:2/p").unwrap(), "http://o:2/p");
        assert_eq!(authority_of("http://h:1/v2/").unwrap(), "h:1");
        assert_eq!(authority_of("https://h").unwrap(), "h");
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
