//! Helpers of the registry tests: a private `docker-registry` (distribution 2.8) on an
//! ephemeral loopback port, seeded with skopeo; a small misbehaving HTTP server; a bearer-token
//! proxy in front of a registry. Every process and directory is removed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod setup;
pub mod token;

/// Whether CI is on (a missing tool or fixture must fail there).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skip with a reason, or fail under CI.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("required for this test under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The repository root (the nearest directory with a `Cargo.lock`: this module is also used
/// by the facade package's CLI tests).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap()
        .to_path_buf()
}

/// A fixture from `../shared/fixtures` (or `$BERTH_FIXTURES`), or `None` after a skip.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    let p = dir.join(name);
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail(&format!("fixture {} is missing", p.display()));
        None
    }
}

/// A unique temporary directory.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private registry process.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub auth: Option<(String, String)>,
    /// Served over TLS with this certificate and key, and asking clients for a certificate
    /// signed by the CA of the third, if any.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// A raw `auth:` block (token auth) used instead of htpasswd; `auth` then only names the
    /// credentials `seed` logs in with.
    pub auth_yaml: Option<String>,
}

impl Registry {
    /// Starts `docker-registry serve` with its own storage; with `auth`, htpasswd basic auth.
    /// `None` (after a skip) when the tools are missing.
    pub fn start(auth: Option<(&str, &str)>) -> Option<Registry> {
        Registry::start_with(auth, None)
    }

    /// Starts a registry using `tokens` for `auth: token`; `seeder` (a user the token server
    /// grants push) is what `seed` logs in with.
    pub fn start_token(tokens: &token::TokenServer, seeder: (&str, &str)) -> Option<Registry> {
        let mut r = Registry::prepare(Some(seeder), None, false)?;
        r.auth_yaml = Some(tokens.registry_auth_yaml());
        r.spawn();
        Some(r)
    }

    /// As [`Registry::start`], served over TLS with `(certificate, key)` (PEM files).
    pub fn start_tls(auth: Option<(&str, &str)>, cert: &Path, key: &Path) -> Option<Registry> {
        Registry::start_with(auth, Some((cert.to_path_buf(), key.to_path_buf(), None)))
    }

    /// As [`Registry::start_tls`], requiring client certificates signed by `client_ca`.
    pub fn start_mtls(cert: &Path, key: &Path, client_ca: &Path) -> Option<Registry> {
        Registry::start_with(
            None,
            Some((
                cert.to_path_buf(),
                key.to_path_buf(),
                Some(client_ca.to_path_buf()),
            )),
        )
    }

    fn start_with(
        auth: Option<(&str, &str)>,
        tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    ) -> Option<Registry> {
        let mut r = Registry::prepare(auth, tls, auth.is_some())?;
        r.spawn();
        Some(r)
    }

    fn prepare(
        auth: Option<(&str, &str)>,
        tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
        htpasswd: bool,
    ) -> Option<Registry> {
        for tool in ["docker-registry", "skopeo"] {
            if !have(tool) {
                skip_or_fail(&format!(
                    "{tool} is not installed (apt-get install docker-registry skopeo)"
                ));
                return None;
            }
        }
        if htpasswd && !have("htpasswd") {
            skip_or_fail("htpasswd is not installed (apt-get install apache2-utils)");
            return None;
        }
        let dir = tempdir("berth-registry-test-");
        let r = Registry {
            child: None,
            port: 0,
            dir,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            tls,
            auth_yaml: None,
        };
        Some(r)
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut auth = self.auth_yaml.clone().unwrap_or_default();
        if let (Some((u, p)), None) = (&self.auth, &self.auth_yaml) {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .unwrap();
            assert!(out.status.success());
            let file = self.dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            );
        }
        let tls = match &self.tls {
            Some((cert, key, client_ca)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n{}",
                cert.display(),
                key.display(),
                client_ca
                    .as_ref()
                    .map(|c| format!("    clientcas:\n      - {}\n", c.display()))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        for _attempt in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let config = self.dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{auth}",
                    data.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            self.port = port;
            if self.wait_ready() {
                return;
            }
            self.stop();
        }
        panic!("docker-registry did not start: {}", self.log());
    }

    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies an oci-archive fixture into `repo:tag` with skopeo.
    pub fn seed(&self, archive: &Path, repo_tag: &str) {
        let mut args = vec!["--dest-tls-verify=false".to_owned()];
        if let Some((u, p)) = &self.auth {
            args.push(format!("--dest-creds={u}:{p}"));
        }
        self.skopeo_copy(archive, repo_tag, &args);
    }

    /// As [`Registry::seed`], for a registry asking for a client certificate: skopeo trusts
    /// `ca` and presents the client pair `(cert, key)`.
    pub fn seed_mtls(&self, archive: &Path, repo_tag: &str, ca: &Path, cert: &Path, key: &Path) {
        let certs = self.dir.path().join("skopeo-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(cert, certs.join("client.cert")).unwrap();
        std::fs::copy(key, certs.join("client.key")).unwrap();
        std::fs::copy(ca, certs.join("ca.crt")).unwrap();
        self.skopeo_copy(
            archive,
            repo_tag,
            &[format!("--dest-cert-dir={}", certs.display())],
        );
    }

    fn skopeo_copy(&self, archive: &Path, repo_tag: &str, dest_args: &[String]) {
        let out = Command::new("skopeo")
            .args(["copy", "-q"])
            .args(dest_args)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy into {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the process (storage kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    /// The request target without its query (`/v2/repo/blobs/sha256:…`).
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.path.split_once('?')?;
        let raw = query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
        let mut out = Vec::new();
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Some(String::from_utf8(out).unwrap())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes, then close.
    pub cut_at: Option<usize>,
    /// Omit Content-Length (the body ends at close).
    pub no_length: bool,
    /// Declare this Content-Length instead of the body's.
    pub length: Option<u64>,
    /// Close the connection without answering at all.
    pub drop: bool,
}

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            ..Resp::default()
        }
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Resp {
        self.body = b.into();
        self
    }
    /// No answer: the connection is closed once the request was read.
    pub fn dropped() -> Resp {
        Resp {
            drop: true,
            ..Resp::default()
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut line = String::new();
    if stream.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

fn write_response(stream: &mut TcpStream, resp: &Resp, head_only: bool) {
    if resp.drop {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let reason = match resp.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Whatever",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !resp.no_length {
        let n = resp.length.unwrap_or(resp.body.len() as u64);
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if !head_only {
        let body = match resp.cut_at {
            Some(n) => &resp.body[..n.min(resp.body.len())],
            None => &resp.body[..],
        };
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

/// A test HTTP server on 127.0.0.1 answering every request through a handler; records the
/// requests. Stopped on drop.
pub struct FakeServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, r) = (handler.clone(), r.clone());
                        std::thread::spawn(move || serve_one(stream, &*h, &r));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    if let Some(req) = read_request(&mut reader) {
        log.lock().unwrap().push(req.clone());
        let resp = handler(&req);
        write_response(&mut stream, &resp, req.method == "HEAD");
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards a request to `upstream` (Connection: close, the client's Host kept, its
/// `Authorization` dropped) and returns the raw response.
pub fn forward(upstream: u16, req: &Req) -> Resp {
    forward_with(upstream, req, false)
}

/// As [`forward`], passing the client's `Authorization` on (a registry with auth behind).
pub fn forward_auth(upstream: u16, req: &Req) -> Resp {
    forward_with(upstream, req, true)
}

fn forward_with(upstream: u16, req: &Req, keep_auth: bool) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    // The client's Host goes on, so the registry's absolute Locations point back at the proxy.
    let host = req
        .header("host")
        .map_or_else(|| format!("127.0.0.1:{upstream}"), str::to_owned);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        if ["host", "connection", "content-length"]
            .iter()
            .any(|x| k.eq_ignore_ascii_case(x))
            || (!keep_auth && k.eq_ignore_ascii_case("authorization"))
        {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    let mut length = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<u64>().ok();
                continue;
            }
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    let mut body = Vec::new();
    if req.method != "HEAD" {
        reader.read_to_end(&mut body).unwrap();
    }
    Resp {
        status,
        headers,
        length: if req.method == "HEAD" { length } else { None },
        body,
        cut_at: None,
        no_length: false,
        drop: false,
    }
}

/// A CA and a server certificate it signed for `san` (`IP:127.0.0.1`, `DNS:…`), made with the
/// openssl CLI in `dir`: (ca.crt, server.crt, server.key). `None` after a skip when openssl is
/// missing.
pub fn make_pki(dir: &Path, name: &str, san: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if !have("openssl") {
        skip_or_fail("openssl is not installed (apt-get install openssl)");
        return None;
    }
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.crt");
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let crt = format!("{name}-server.crt");
    let ext = dir.join(format!("{name}-ext.cnf"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN=berth test CA {name}");
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca_args);
    let mut req_args = vec!["req"];
    req_args.extend(ec);
    req_args.extend([
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=berth test registry",
    ]);
    openssl(&req_args);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
    ]);
    Some((dir.join(ca), dir.join(crt), dir.join(key)))
}

/// A client certificate signed by the CA `make_pki(dir, name, …)` made: (client.cert,
/// client.key) in `dir/<out>/`.
pub fn make_client_cert(dir: &Path, name: &str, out: &str) -> (PathBuf, PathBuf) {
    let o = dir.join(out);
    std::fs::create_dir_all(&o).unwrap();
    let ext = dir.join(format!("{name}-client-ext.cnf"));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let (cert, key, csr) = (
        o.join("client.cert"),
        o.join("client.key"),
        o.join("client.csr"),
    );
    for args in [
        vec![
            "req".to_owned(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:prime256v1".into(),
            "-nodes".into(),
            "-keyout".into(),
            key.display().to_string(),
            "-out".into(),
            csr.display().to_string(),
            "-subj".into(),
            "/CN=berth test client".into(),
        ],
        vec![
            "x509".to_owned(),
            "-req".into(),
            "-in".into(),
            csr.display().to_string(),
            "-CA".into(),
            format!("{name}-ca.crt"),
            "-CAkey".into(),
            format!("{name}-ca.key"),
            "-CAcreateserial".into(),
            "-out".into(),
            cert.display().to_string(),
            "-days".into(),
            "2".into(),
            "-extfile".into(),
            ext.display().to_string(),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(&csr).unwrap();
    (cert, key)
}

/// A listening socket on 127.0.0.1 that completes no connection: its accept queue (backlog
/// 0) is filled by one connection never accepted, so the kernel drops further SYNs and a
/// connect to it hangs until the client gives up. Closed on drop.
pub struct Blackhole {
    listener: TcpListener,
    _filler: TcpStream,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: `listen` on a socket fd this function owns (it stays open in `listener`);
        // calling it again on a listening socket only changes the backlog.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        let port = listener.local_addr().unwrap().port();
        let filler = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Blackhole {
            listener,
            _filler: filler,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.listener.local_addr().unwrap().port())
    }
}

/// A counter usable from handlers.
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}
