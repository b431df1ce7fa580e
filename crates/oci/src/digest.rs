//! Content digests: validated `algorithm:hex` names, a streaming digester and a verifying reader.
//!
//! A [`Digest`] is always valid once constructed: the algorithm is one berth supports (sha256,
//! sha512) and the hex part has that algorithm's length in lowercase. Hashing uses the `sha2`
//! crate, which picks the CPU's SHA extensions at run time.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// A digest algorithm berth supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default everywhere.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of the hex encoding of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Starts a digester for this algorithm.
    pub fn digester(self) -> Digester {
        Digester::new(self)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(Error::InvalidDigest {
                digest: s.to_owned(),
                reason: "unsupported algorithm (sha256 and sha512 are supported)",
            }),
        }
    }
}

/// A validated content digest such as `sha256:e3b0c4…`.
///
/// Ordering and equality compare the algorithm, then the hex text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Builds a digest from an algorithm and its hex encoding.
    ///
    /// # Errors
    /// [`Error::InvalidDigest`] when the hex is not lowercase hex of the algorithm's length.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidDigest {
            digest: format!("{algorithm}:{hex}"),
            reason,
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong hex length for the algorithm"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("hex part must be lowercase hexadecimal"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding (without the algorithm prefix); safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut d = Digester::new(algorithm);
        d.update(data);
        d.finalize()
    }

    /// SHA-256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Self::of(Algorithm::Sha256, data)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| Error::InvalidDigest {
            digest: s.to_owned(),
            reason: "missing ':' between algorithm and hex",
        })?;
        let algorithm: Algorithm = alg.parse().map_err(|_| Error::InvalidDigest {
            digest: s.to_owned(),
            reason: "unsupported algorithm (sha256 and sha512 are supported)",
        })?;
        Digest::new(algorithm, hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;

    fn try_from(d: &oci_spec::image::Digest) -> Result<Self> {
        d.to_string().parse()
    }
}

impl TryFrom<&Digest> for oci_spec::image::Digest {
    type Error = Error;

    fn try_from(d: &Digest) -> Result<Self> {
        let s = d.to_string();
        s.parse().map_err(|_| Error::InvalidDigest {
            digest: s,
            reason: "not accepted by oci-spec",
        })
    }
}

#[derive(Clone)]
enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// A streaming digester: feed bytes with [`Digester::update`] (or `io::Write`), then
/// [`Digester::finalize`]. It also counts the bytes it has seen.
#[derive(Clone)]
pub struct Digester {
    state: State,
    len: u64,
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digester")
            .field("algorithm", &self.algorithm())
            .field("len", &self.len)
            .finish()
    }
}

impl Digester {
    /// A new digester for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        Digester { state, len: 0 }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
        self.len += data.len() as u64;
    }

    /// The digest of everything fed so far, leaving the digester usable.
    pub fn current(&self) -> Digest {
        self.clone().finalize()
    }

    /// The digest of everything fed.
    pub fn finalize(self) -> Digest {
        let (algorithm, hex) = match self.state {
            State::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            State::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes what passes through and, at end of stream, checks the size and digest.
///
/// Reading past the expected size, ending short of it, or ending with another digest fails with an
/// `io::Error` of kind `InvalidData` whose inner error is an [`Error`]
/// ([`Error::SizeMismatch`] or [`Error::DigestMismatch`]); use [`verification_error`] to get it
/// back. Nothing is reported as end of stream before the checks pass, so a consumer that copies to
/// EOF has seen verified content when the copy succeeds.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    digester: Digester,
    expected: Digest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, expecting `expected` and, when given, exactly `expected_size` bytes.
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            digester: Digester::new(expected.algorithm()),
            inner,
            expected,
            expected_size,
            verified: false,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.digester.len()
    }

    /// Whether the end of stream was reached and verified.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fail(err: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        // Never read more than one byte past the declared size: that byte proves an overrun.
        let limit = match self.expected_size {
            Some(size) => {
                let left = size.saturating_sub(self.digester.len()) + 1;
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..limit])?;
        self.digester.update(&buf[..n]);
        if let Some(size) = self.expected_size
            && self.digester.len() > size
        {
            return Err(Self::fail(Error::SizeMismatch {
                digest: self.expected.to_string(),
                expected: size,
                actual: self.digester.len(),
            }));
        }
        if n == 0 {
            if let Some(size) = self.expected_size
                && self.digester.len() != size
            {
                return Err(Self::fail(Error::SizeMismatch {
                    digest: self.expected.to_string(),
                    expected: size,
                    actual: self.digester.len(),
                }));
            }
            let actual = self.digester.current();
            if actual != self.expected {
                return Err(Self::fail(Error::DigestMismatch {
                    expected: self.expected.to_string(),
                    actual: actual.to_string(),
                }));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

/// Extracts the verification [`Error`] carried by an `io::Error` from a [`VerifyingReader`].
pub fn verification_error(err: &io::Error) -> Option<&Error> {
    err.get_ref().and_then(|e| e.downcast_ref::<Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(Digest::sha256(b""), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            &EMPTY.to_uppercase(),
            &EMPTY[..EMPTY.len() - 1],
            &format!("{EMPTY}0"),
            "sha256:../../../../etc/passwd",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn sha512_known_value() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn verifying_reader_accepts_exact() {
        let data = b"hello world".to_vec();
        let mut r = VerifyingReader::new(&data[..], Digest::sha256(&data), Some(11));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(r.is_verified());
    }

    #[test]
    fn verifying_reader_detects_mismatch_short_and_overrun() {
        let data = b"hello world".to_vec();
        let other = Digest::sha256(b"other");
        let err = VerifyingReader::new(&data[..], other, None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            verification_error(&err),
            Some(Error::DigestMismatch { .. })
        ));
        let good = Digest::sha256(&data);
        for size in [10, 12] {
            let err = VerifyingReader::new(&data[..], good.clone(), Some(size))
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert!(
                matches!(verification_error(&err), Some(Error::SizeMismatch { .. })),
                "{size}"
            );
        }
    }

    #[test]
    fn converts_with_oci_spec() {
        let d: Digest = EMPTY.parse().unwrap();
        let o: oci_spec::image::Digest = (&d).try_into().unwrap();
        assert_eq!(Digest::try_from(&o).unwrap(), d);
    }
}
