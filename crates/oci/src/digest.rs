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
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

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

/// Magic bytes opening a saved digester state ("berth digester state").
const STATE_MAGIC: &[u8; 4] = b"BDST";
/// Version of the saved-state layout.
const STATE_VERSION: u8 = 1;
/// Magic, version, algorithm tag, byte count.
const STATE_HEADER_LEN: usize = 4 + 1 + 1 + 8;
/// Trailing checksum: the first bytes of the SHA-256 of everything before it.
const STATE_CHECKSUM_LEN: usize = 8;

impl Algorithm {
    /// The tag stored in a saved digester state.
    fn state_tag(self) -> u8 {
        match self {
            Algorithm::Sha256 => 1,
            Algorithm::Sha512 => 2,
        }
    }

    /// The sha2 crate's serialized-state geometry for this algorithm:
    /// (chaining-state bytes, core state bytes, block size).
    ///
    /// The core state is the chaining words followed by a little-endian block counter; the
    /// block buffer follows it as one position byte and the buffered data (sha2 0.11's
    /// `SerializableState`, stable within 0.11.x).
    fn state_geometry(self) -> (usize, usize, u64) {
        match self {
            Algorithm::Sha256 => (32, 40, 64),
            Algorithm::Sha512 => (64, 80, 128),
        }
    }
}

impl Digester {
    /// Serialises the digester's complete state (hash state, buffered partial block and byte
    /// count) so that hashing can continue later, in this or another process, without
    /// re-reading the bytes already hashed. Used by resumable content ingests.
    ///
    /// The bytes are self-describing (magic, layout version, algorithm, byte count) and end with
    /// a checksum, so [`Digester::restore_state`] refuses truncated or corrupted state instead
    /// of silently producing a wrong digest. They contain hash internals, not the content.
    /// The layout is stable for a given berth-oci major version and `sha2` 0.11.
    pub fn save_state(&self) -> Vec<u8> {
        let hash_state: Vec<u8> = match &self.state {
            State::Sha256(h) => SerializableState::serialize(h).to_vec(),
            State::Sha512(h) => SerializableState::serialize(h).to_vec(),
        };
        let mut out = Vec::with_capacity(STATE_HEADER_LEN + hash_state.len() + STATE_CHECKSUM_LEN);
        out.extend_from_slice(STATE_MAGIC);
        out.push(STATE_VERSION);
        out.push(self.algorithm().state_tag());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&hash_state);
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum[..STATE_CHECKSUM_LEN]);
        out
    }

    /// Rebuilds a digester from bytes made by [`Digester::save_state`]; it continues exactly
    /// where the saved one stopped ([`Digester::len`] included).
    ///
    /// # Errors
    /// [`Error::InvalidDigesterState`] (kind `InvalidArgument`) when the bytes are not a saved
    /// state of `algorithm`: wrong length, magic, version or algorithm, a checksum mismatch, a
    /// byte count that disagrees with the hash state, or a hash state `sha2` refuses.
    pub fn restore_state(algorithm: Algorithm, bytes: &[u8]) -> Result<Digester> {
        let invalid = |reason: String| Error::InvalidDigesterState {
            algorithm: algorithm.to_string(),
            reason,
        };
        let (words_len, core_len, block_size) = algorithm.state_geometry();
        let hash_len = match algorithm {
            Algorithm::Sha256 => size_of::<SerializedState<sha2::Sha256>>(),
            Algorithm::Sha512 => size_of::<SerializedState<sha2::Sha512>>(),
        };
        let expected_len = STATE_HEADER_LEN + hash_len + STATE_CHECKSUM_LEN;
        if bytes.len() != expected_len {
            return Err(invalid(format!(
                "{} bytes, expected {expected_len}",
                bytes.len()
            )));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - STATE_CHECKSUM_LEN);
        if &body[..4] != STATE_MAGIC {
            return Err(invalid("missing magic bytes".to_owned()));
        }
        if body[4] != STATE_VERSION {
            return Err(invalid(format!("unsupported layout version {}", body[4])));
        }
        if body[5] != algorithm.state_tag() {
            return Err(invalid(format!(
                "state was saved for another algorithm (tag {})",
                body[5]
            )));
        }
        if sha2::Sha256::digest(body)[..STATE_CHECKSUM_LEN] != *checksum {
            return Err(invalid("checksum mismatch (corrupted state)".to_owned()));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&body[6..STATE_HEADER_LEN]);
        let len = u64::from_le_bytes(len_bytes);
        let hash_state = &body[STATE_HEADER_LEN..];

        // The byte count must agree with the hash state: whole blocks compressed plus the
        // bytes waiting in the block buffer.
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&hash_state[words_len..words_len + 8]);
        let high_counter_zero = hash_state[words_len + 8..core_len].iter().all(|&b| b == 0);
        let blocks = u64::from_le_bytes(counter);
        let buffered = u64::from(hash_state[core_len]);
        let consistent = high_counter_zero
            && blocks
                .checked_mul(block_size)
                .and_then(|n| n.checked_add(buffered))
                == Some(len);
        if !consistent {
            return Err(invalid(format!(
                "byte count {len} disagrees with the hash state"
            )));
        }

        let refused = |_| invalid("hash state refused by sha2".to_owned());
        let state = match algorithm {
            Algorithm::Sha256 => {
                let raw = SerializedState::<sha2::Sha256>::try_from(hash_state)
                    .map_err(|_| invalid("hash state has the wrong size".to_owned()))?;
                State::Sha256(sha2::Sha256::deserialize(&raw).map_err(refused)?)
            }
            Algorithm::Sha512 => {
                let raw = SerializedState::<sha2::Sha512>::try_from(hash_state)
                    .map_err(|_| invalid("hash state has the wrong size".to_owned()))?;
                State::Sha512(sha2::Sha512::deserialize(&raw).map_err(refused)?)
            }
        };
        Ok(Digester { state, len })
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

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn restored_digester_continues_to_same_digest() {
        let data = sample(10_000);
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let whole = Digest::of(alg, &data);
            // Cut points on and around block boundaries and inside blocks.
            for cut in [0, 1, 63, 64, 65, 127, 128, 129, 1000, 9_999, 10_000] {
                let mut first = Digester::new(alg);
                first.update(&data[..cut]);
                let saved = first.save_state();
                drop(first);
                let mut resumed = Digester::restore_state(alg, &saved).unwrap();
                assert_eq!(resumed.algorithm(), alg);
                assert_eq!(resumed.len(), cut as u64, "{alg} cut {cut}");
                resumed.update(&data[cut..]);
                assert_eq!(resumed.len(), data.len() as u64);
                assert_eq!(resumed.finalize(), whole, "{alg} cut {cut}");
            }
        }
    }

    #[test]
    fn state_can_be_saved_repeatedly() {
        let data = sample(5_000);
        let mut d = Digester::new(Algorithm::Sha256);
        for chunk in data.chunks(777) {
            d.update(chunk);
            d = Digester::restore_state(Algorithm::Sha256, &d.save_state()).unwrap();
        }
        assert_eq!(d.finalize(), Digest::sha256(&data));
    }

    #[test]
    fn garbage_state_is_invalid_argument() {
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(&sample(100));
        let good = d.save_state();

        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("zeros", vec![0; good.len()]),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("extended", [good.clone(), vec![0]].concat()),
            ("text", b"not a digester state at all".to_vec()),
        ];
        // Flip each byte in turn: magic, version, algorithm, count, hash state and checksum.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            cases.push(("flipped", bad));
        }
        for (name, bad) in &cases {
            let err = Digester::restore_state(Algorithm::Sha256, bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{name}");
            assert!(
                matches!(err, Error::InvalidDigesterState { .. }),
                "{name}: {err}"
            );
        }
        // The right bytes for the wrong algorithm.
        let err = Digester::restore_state(Algorithm::Sha512, &good).unwrap_err();
        assert!(matches!(err, Error::InvalidDigesterState { .. }), "{err}");
        let mut d512 = Digester::new(Algorithm::Sha512);
        d512.update(b"abc");
        let err = Digester::restore_state(Algorithm::Sha256, &d512.save_state()).unwrap_err();
        assert!(matches!(err, Error::InvalidDigesterState { .. }), "{err}");
    }

    #[test]
    fn inconsistent_byte_count_is_refused_even_with_valid_checksum() {
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(&sample(200));
        let mut forged = d.save_state();
        forged.truncate(forged.len() - STATE_CHECKSUM_LEN);
        forged[6..14].copy_from_slice(&201u64.to_le_bytes());
        let sum = sha2::Sha256::digest(&forged);
        forged.extend_from_slice(&sum[..STATE_CHECKSUM_LEN]);
        let err = Digester::restore_state(Algorithm::Sha256, &forged).unwrap_err();
        assert!(err.to_string().contains("byte count"), "{err}");
    }
}
