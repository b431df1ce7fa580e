//! Docker credential helpers: `docker-credential-<name> get` reads the server on stdin and
//! prints `{"ServerURL":…,"Username":…,"Secret":…}`; a `Username` of `<token>` makes the
//! secret an identity token (an OAuth2 refresh token for the bearer flow). A helper that
//! does not know the server exits non-zero saying "credentials not found"; that is "no
//! credentials", any other failure is [`Error::CredentialHelper`]. `store` takes that JSON on
//! stdin ([`helper_store`], for `berth login`); `erase` takes the server on stdin
//! ([`helper_erase`], for `berth logout`).
//!
//! The helper is found in the given search path (`PATH` format; the process's `PATH` when
//! none is given) and run by its absolute path with that same `PATH`, stdin/stdout/stderr
//! piped, and killed if it has not answered within [`HELPER_TIMEOUT`]. Helper names with a
//! `/` are refused.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::error::{Error, Result};

/// How long a helper may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most output read from a helper.
const MAX_OUTPUT: u64 = 1 << 20;

/// Whether helper `name` can be found.
pub(crate) fn helper_exists(name: &str, search_path: Option<&OsStr>) -> bool {
    !name.contains('/') && find_helper(name, search_path).is_some()
}

/// The program of helper `name` found in `search_path` (or `$PATH`).
fn find_helper(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    let program = format!("docker-credential-{name}");
    let path = search_path
        .map(OsStr::to_owned)
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(&program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Asks helper `name` for the credentials of `server` (what docker passes: the registry host,
/// or `https://index.docker.io/v1/` for Docker Hub). `Ok(None)` when the helper has none.
///
/// # Errors
/// [`Error::CredentialHelper`]: a bad name, no such program, a failure other than "not
/// found", a timeout, or output that is not the expected JSON.
pub fn helper_credentials(
    name: &str,
    server: &str,
    search_path: Option<&OsStr>,
) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let fail = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        server: server.to_owned(),
        reason,
    };
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(fail("invalid helper name".into()));
    }
    let exe = find_helper(name, search_path).ok_or_else(|| {
        fail(if search_path.is_some() {
            "not found in the configured helper path".into()
        } else {
            "not found in PATH".into()
        })
    })?;
    let (status, stdout, stderr) =
        run(&exe, "get", server.as_bytes(), search_path).map_err(&fail)?;
    let text = String::from_utf8_lossy(&stdout);
    if !status.success() {
        let said = format!(
            "{} {}",
            text.trim(),
            String::from_utf8_lossy(&stderr).trim()
        );
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{status}: {}", said.trim())));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|e| fail(format!("output is not JSON: {e}")))?;
    let field = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let (username, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Err(fail("answer without a Secret".into()));
    }
    Ok(Some(Credentials {
        username,
        password: secret,
    }))
}

/// Stores `creds` for `server` through helper `name` (`docker-credential-<name> store`, the
/// JSON `{"ServerURL","Username","Secret"}` on stdin), as `docker login` does when the auth
/// file names a helper.
///
/// # Errors
/// [`Error::CredentialHelper`]: a bad name, no such program, a failure, a timeout.
pub fn helper_store(
    name: &str,
    server: &str,
    creds: &Credentials,
    search_path: Option<&OsStr>,
) -> Result<()> {
    let program = format!("docker-credential-{name}");
    let fail = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        server: server.to_owned(),
        reason,
    };
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(fail("invalid helper name".into()));
    }
    let exe = find_helper(name, search_path).ok_or_else(|| fail("not found".into()))?;
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": creds.username,
        "Secret": creds.password,
    })
    .to_string();
    let (status, stdout, stderr) =
        run(&exe, "store", input.as_bytes(), search_path).map_err(&fail)?;
    if !status.success() {
        return Err(fail(format!(
            "{status}: {} {}",
            String::from_utf8_lossy(&stdout).trim(),
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(())
}

/// Erases the credentials of `server` from helper `name` (`docker-credential-<name> erase`,
/// the server on stdin), as `docker logout` does. `Ok(false)` when the helper had none
/// (it answered "credentials not found").
///
/// # Errors
/// [`Error::CredentialHelper`]: a bad name, no such program, another failure, a timeout.
pub fn helper_erase(name: &str, server: &str, search_path: Option<&OsStr>) -> Result<bool> {
    let program = format!("docker-credential-{name}");
    let fail = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        server: server.to_owned(),
        reason,
    };
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(fail("invalid helper name".into()));
    }
    let exe = find_helper(name, search_path).ok_or_else(|| fail("not found".into()))?;
    let (status, stdout, stderr) =
        run(&exe, "erase", server.as_bytes(), search_path).map_err(&fail)?;
    if status.success() {
        return Ok(true);
    }
    let said = format!(
        "{} {}",
        String::from_utf8_lossy(&stdout).trim(),
        String::from_utf8_lossy(&stderr).trim()
    );
    if said.to_ascii_lowercase().contains("credentials not found") {
        return Ok(false);
    }
    Err(fail(format!("{status}: {}", said.trim())))
}

/// Runs `exe action` with `input` on stdin (and `search_path` as its `PATH`), waiting at most
/// [`HELPER_TIMEOUT`]. Returns its status, stdout and stderr (each capped), or why it could not
/// be run.
fn run(
    exe: &std::path::Path,
    action: &str,
    input: &[u8],
    search_path: Option<&OsStr>,
) -> std::result::Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), String> {
    let mut cmd = Command::new(exe);
    cmd.arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = search_path {
        cmd.env("PATH", p);
    }
    let mut child = spawn_retrying_busy(&mut cmd).map_err(|e| format!("cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(input);
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || read_capped(stdout));
    let err_reader = std::thread::spawn(move || read_capped(stderr));
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {HELPER_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

fn read_capped(r: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
    }
    buf
}

/// Spawns, retrying a few times on `ETXTBSY` (a helper just written by a process whose other
/// thread forked while the file was open).
fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
