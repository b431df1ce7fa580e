//! TLS trust for registries with a private CA, and telling TLS failures from other transport
//! errors.
//!
//! The client speaks TLS through `ureq`'s rustls backend (ring provider). By default it trusts
//! Mozilla's roots (`webpki-roots`, built in). When a registry needs another CA, the roots for
//! that registry become the system bundle (the first of `$SSL_CERT_FILE`,
//! `/etc/ssl/certs/ca-certificates.crt`, `/etc/pki/tls/certs/ca-bundle.crt`,
//! `/etc/ssl/cert.pem` that exists) plus the extra CAs: every certificate of
//! [`super::RegistryOptions::ca_files`], and every `*.crt` file in
//! `<certs_dir>/<host[:port]>/` (docker's `/etc/docker/certs.d/<host>/ca.crt` layout, which
//! containerd's `certs.d` directories also use for CA files), and the `ca` files a
//! `hosts.toml` names for the endpoint (`super::hosts`), whose `client` pair and
//! `skip_verify` (no verification at all) apply too.
//! `ureq` takes root certificates only as a complete list, hence the system bundle.
//!
//! A client certificate for mutual TLS is taken from the same directory as docker does:
//! `<certs_dir>/<host>/NAME.cert` with its key `NAME.key` (the first pair by name; a
//! certificate without its key, or a key without its certificate, is an error). The pair is
//! checked (the key parses and matches the certificate) before it is used.
//!
//! A handshake that fails (unknown issuer, wrong name, expired, not TLS at all) becomes
//! [`Error::Tls`] with a hint, never retried.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, parse_pem};

use super::RegistryOptions;
use super::error::{Error, Result};
use super::hosts::Endpoint;

/// System CA bundles, first found wins.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The largest PEM file read.
const MAX_PEM: u64 = 16 << 20;

/// Certificates of the PEM file at `path` (private keys and other sections are skipped).
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Tls`] when it holds no certificate or bad PEM.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if meta.len() > MAX_PEM {
        return Err(Error::Tls {
            url: path.display().to_string(),
            reason: format!("certificate file larger than {MAX_PEM} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let mut certs = Vec::new();
    for item in parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Tls {
                    url: path.display().to_string(),
                    reason: format!("bad PEM: {e}"),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(Error::Tls {
            url: path.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The root certificates for `host` when it needs more than the default roots; `None` to
/// keep the defaults.
///
/// # Errors
/// As [`read_certificates`]; [`Error::Io`] for an unreadable certs directory.
pub(crate) fn roots_for(
    opts: &RegistryOptions,
    host: &str,
    extra: &[PathBuf],
) -> Result<Option<Vec<Certificate<'static>>>> {
    let mut files = opts.ca_files.clone();
    files.extend(extra.iter().cloned());
    if let Some(dir) = &opts.certs_dir {
        files.extend(files_with(dir, host, "crt")?);
    }
    if files.is_empty() {
        return Ok(None);
    }
    let mut roots = Vec::new();
    for f in &files {
        roots.extend(read_certificates(f)?);
    }
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    match bundle.map(|b| (read_certificates(&b), b)) {
        Some((Ok(system), _)) => roots.extend(system),
        Some((Err(e), b)) => {
            tracing::warn!(bundle = %b.display(), error = %e, "system CA bundle unusable; trusting the extra CAs only");
        }
        None => tracing::warn!("no system CA bundle found; trusting the extra CAs only"),
    }
    Ok(Some(roots))
}

/// The client certificate for `host` from `<certs_dir>/<host>/` (see the module docs), if any.
///
/// # Errors
/// [`Error::Tls`] for a certificate without its key (or the reverse), a bad PEM, or a key that
/// does not match; [`Error::Io`].
pub(crate) fn client_cert_for(opts: &RegistryOptions, host: &str) -> Result<Option<ClientCert>> {
    let Some(dir) = &opts.certs_dir else {
        return Ok(None);
    };
    let certs = files_with(dir, host, "cert")?;
    let keys = files_with(dir, host, "key")?;
    let bad = |path: &Path, reason: String| Error::Tls {
        url: path.display().to_string(),
        reason,
    };
    for key in &keys {
        if !certs.contains(&key.with_extension("cert")) {
            return Err(bad(key, "client key without its NAME.cert".into()));
        }
    }
    let Some(cert_path) = certs.first() else {
        return Ok(None);
    };
    let key_path = cert_path.with_extension("key");
    if !keys.contains(&key_path) {
        return Err(bad(
            cert_path,
            "client certificate without its NAME.key".into(),
        ));
    }
    load_client_pair(cert_path, &key_path).map(Some)
}

/// The client certificate chain at `cert_path` with its key at `key_path` (they may be the
/// same file), checked to go together.
///
/// # Errors
/// [`Error::Tls`] for a bad PEM, no key, or a key that does not match; [`Error::Io`].
pub(crate) fn load_client_pair(cert_path: &Path, key_path: &Path) -> Result<ClientCert> {
    let bad = |path: &Path, reason: String| Error::Tls {
        url: path.display().to_string(),
        reason,
    };
    let chain = read_certificates(cert_path)?;
    let key_pem = std::fs::read(key_path).map_err(|e| Error::io("read", key_path, e))?;
    let key = parse_pem(&key_pem)
        .find_map(|item| match item {
            Ok(PemItem::PrivateKey(k)) => Some(k),
            _ => None,
        })
        .ok_or_else(|| bad(key_path, "no usable private key".into()))?;
    // What ureq does with the pair (it panics where this returns an error).
    let provider = rustls::crypto::ring::default_provider();
    let der_chain = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
        .collect();
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|e| bad(key_path, format!("unusable private key: {e}")))?;
    rustls::sign::CertifiedKey::from_der(der_chain, der_key, &provider).map_err(|e| {
        bad(
            key_path,
            format!("does not go with {}: {e}", cert_path.display()),
        )
    })?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// The TLS configuration for endpoint `ep`: roots as [`roots_for`] with the endpoint's own CA
/// files, its client certificate (else the certs directory's), and no verification at all
/// when it says `skip_verify`.
///
/// # Errors
/// As [`roots_for`], [`client_cert_for`] and [`load_client_pair`].
pub(crate) fn config_for(opts: &RegistryOptions, ep: &Endpoint) -> Result<ureq::tls::TlsConfig> {
    let roots = roots_for(opts, &ep.authority, &ep.ca_files)?;
    let client = match &ep.client {
        Some((cert, key)) => Some(load_client_pair(cert, key)?),
        None => client_cert_for(opts, &ep.authority)?,
    };
    let mut tls = ureq::tls::TlsConfig::builder().client_cert(client);
    if let Some(roots) = roots {
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)));
    }
    if ep.skip_verify {
        tls = tls.disable_verification(true);
    }
    Ok(tls.build())
}

/// The files `<dir>/<host>/*.<ext>`, sorted.
fn files_with(dir: &Path, host: &str, ext: &str) -> Result<Vec<PathBuf>> {
    if host.is_empty() || host.contains('/') || host == "." || host == ".." {
        return Ok(Vec::new());
    }
    let sub = dir.join(host);
    let entries = match std::fs::read_dir(&sub) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &sub, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", &sub, e))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == ext) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A hint for a rustls failure.
fn hint(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError, Error as R};
    match e {
        R::InvalidCertificate(CertificateError::UnknownIssuer) => {
            ": the certificate is signed by an unknown authority; trust its CA with \
             RegistryOptions::ca_files (berth: --ca-file) or <certs-dir>/<host>/ca.crt"
        }
        R::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => ": the certificate does not name this host",
        R::InvalidCertificate(_) => ": the certificate does not verify",
        R::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::HandshakeFailure,
        ) => {
            ": the registry refused our client certificate or wants one; put NAME.cert and \
             NAME.key in <certs-dir>/<host>/"
        }
        R::InvalidMessage(_) => {
            ": the server does not speak TLS here (plain HTTP? see plain_http / --plain-http)"
        }
        _ => "",
    }
}

/// The TLS failure inside a transport error, if it is one.
pub(crate) fn tls_failure(e: &ureq::Error) -> Option<String> {
    let rustls_err: Option<&rustls::Error> = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    if let Some(r) = rustls_err {
        return Some(format!("{r}{}", hint(r)));
    }
    match e {
        ureq::Error::Tls(m) => Some((*m).to_owned()),
        ureq::Error::Pem(p) => Some(format!("PEM: {p}")),
        _ => None,
    }
}
