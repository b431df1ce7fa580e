//! Layer compression: detection by magic bytes, streaming decoders and encoders.
//!
//! A layer blob is gzip (one or more members), zstd (one or more frames, skippable frames
//! allowed) or a plain tar. [`detect`] looks at the first bytes only; [`Decompressor::new`] peeks
//! at the head of a stream (up to [`PEEK_LEN`] bytes, fewer at end of stream), detects the
//! compression, cross-checks it with the compression the blob's media type declares, and then
//! decodes the whole stream, peeked bytes included. An empty stream counts as uncompressed.
//!
//! gzip uses flate2's `MultiGzDecoder` (the workspace selects the zlib-rs backend), zstd the
//! `zstd` crate's streaming decoder. [`Compressor`] is the writing side used by diff and export.
//! Nothing here buffers more than one peek and the codecs' own windows.

use std::io::{self, Cursor, Read, Write};

use berth_oci::{Compression, ErrorKind};

/// How many bytes [`Decompressor::new`] peeks at before choosing a decoder.
pub const PEEK_LEN: usize = 512;

const GZIP_MAGIC: [u8; 3] = [0x1F, 0x8B, 0x08];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const ZSTD_SKIPPABLE_MIN: u32 = 0x184D_2A50;
const ZSTD_SKIPPABLE_MAX: u32 = 0x184D_2A5F;

/// Errors of compression detection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The magic bytes of a blob disagree with the compression its media type declares.
    #[error(
        "blob {blob}: media type declares {declared:?} compression but the content is {detected:?}"
    )]
    Mismatch {
        /// The blob concerned (digest or path).
        blob: String,
        /// The compression the media type declares.
        declared: Compression,
        /// The compression found in the content.
        detected: Compression,
    },
    /// Reading the head of the blob failed.
    #[error("blob {blob}: reading the stream head: {source}")]
    Read {
        /// The blob concerned (digest or path).
        blob: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Setting up a codec failed (out of memory in the codec, usually).
    #[error("blob {blob}: starting the {compression:?} codec: {source}")]
    Codec {
        /// The blob concerned (digest or path).
        blob: String,
        /// The codec.
        compression: Compression,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Classifies the error: a mismatch is `InvalidArgument`, I/O failures are `Io`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Mismatch { .. } => ErrorKind::InvalidArgument,
            Error::Read { .. } | Error::Codec { .. } => ErrorKind::Io,
        }
    }
}

/// Detects the compression of a stream from its first bytes.
///
/// gzip is `1F 8B 08`; zstd is `28 B5 2F FD` or a skippable frame (`0x184D2A50..=0x184D2A5F`,
/// little endian). Anything else, including an empty or too short head, is [`Compression::None`].
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        return Compression::Gzip;
    }
    if head.starts_with(&ZSTD_MAGIC) {
        return Compression::Zstd;
    }
    if let Some(first) = head.get(..4) {
        let magic = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
        if (ZSTD_SKIPPABLE_MIN..=ZSTD_SKIPPABLE_MAX).contains(&magic) {
            return Compression::Zstd;
        }
    }
    Compression::None
}

/// The stream given to the decoders: the peeked head followed by the rest of the source.
pub type Peeked<R> = io::Chain<Cursor<Vec<u8>>, R>;

/// A streaming decoder for one layer blob, chosen by [`Decompressor::new`].
pub enum Decompressor<R: Read> {
    /// An uncompressed stream, passed through.
    Plain(Peeked<R>),
    /// gzip, all members.
    Gzip(Box<flate2::read::MultiGzDecoder<Peeked<R>>>),
    /// zstd, all frames (skippable frames are skipped).
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Peeked<R>>>>),
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Decompressor")
            .field(&self.compression())
            .finish()
    }
}

impl<R: Read> Decompressor<R> {
    /// Peeks at `reader`, detects its compression and returns the matching decoder.
    ///
    /// `declared` is the compression named by the blob's media type, if known; when it disagrees
    /// with the magic bytes the result is [`Error::Mismatch`] naming `blob`. A declared
    /// compression on a stream shorter than a magic number (an empty blob) is not a mismatch:
    /// such a stream is treated as what it is (uncompressed).
    ///
    /// # Errors
    /// [`Error::Mismatch`], [`Error::Read`] when the head cannot be read, [`Error::Codec`].
    pub fn new(mut reader: R, declared: Option<Compression>, blob: &str) -> Result<Self, Error> {
        let mut head = Vec::with_capacity(PEEK_LEN);
        (&mut reader)
            .take(PEEK_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|source| Error::Read {
                blob: blob.to_owned(),
                source,
            })?;
        let detected = detect(&head);
        if let Some(declared) = declared
            && declared != detected
            && !(detected == Compression::None && head.len() < ZSTD_MAGIC.len())
        {
            return Err(Error::Mismatch {
                blob: blob.to_owned(),
                declared,
                detected,
            });
        }
        let stream = Cursor::new(head).chain(reader);
        Ok(match detected {
            Compression::None => Decompressor::Plain(stream),
            Compression::Gzip => {
                Decompressor::Gzip(Box::new(flate2::read::MultiGzDecoder::new(stream)))
            }
            Compression::Zstd => {
                let decoder =
                    zstd::stream::read::Decoder::new(stream).map_err(|source| Error::Codec {
                        blob: blob.to_owned(),
                        compression: Compression::Zstd,
                        source,
                    })?;
                Decompressor::Zstd(Box::new(decoder))
            }
        })
    }

    /// The compression being decoded.
    pub fn compression(&self) -> Compression {
        match self {
            Decompressor::Plain(_) => Compression::None,
            Decompressor::Gzip(_) => Compression::Gzip,
            Decompressor::Zstd(_) => Compression::Zstd,
        }
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::Plain(r) => r.read(buf),
            Decompressor::Gzip(r) => r.read(buf),
            Decompressor::Zstd(r) => r.read(buf),
        }
    }
}

/// A streaming encoder producing one layer blob; call [`Compressor::finish`] at the end.
pub enum Compressor<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip, one member, no name and mtime 0 in the header (reproducible output).
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd, one frame with a content checksum.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = match self {
            Compressor::Plain(_) => Compression::None,
            Compressor::Gzip(_) => Compression::Gzip,
            Compressor::Zstd(_) => Compression::Zstd,
        };
        f.debug_tuple("Compressor").field(&c).finish()
    }
}

impl<W: Write> Compressor<W> {
    /// Wraps `writer` in an encoder for `compression` at the codec's default level
    /// (gzip 6, zstd 3) unless `level` is given.
    ///
    /// # Errors
    /// The codec could not be set up (zstd parameter errors).
    pub fn new(writer: W, compression: Compression, level: Option<i32>) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::Plain(writer),
            Compression::Gzip => {
                let level = level.map_or(flate2::Compression::default(), |l| {
                    flate2::Compression::new(l.clamp(0, 9).unsigned_abs())
                });
                Compressor::Gzip(flate2::GzBuilder::new().mtime(0).write(writer, level))
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(writer, level.unwrap_or(3))?;
                enc.include_checksum(true)?;
                Compressor::Zstd(enc)
            }
        })
    }

    /// Flushes the codec's trailer and returns the inner writer.
    ///
    /// # Errors
    /// Writing the trailer failed.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut enc = Compressor::new(Vec::new(), c, None).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn decode(blob: &[u8], declared: Option<Compression>) -> Result<Vec<u8>, Error> {
        let mut dec = Decompressor::new(blob, declared, "test-blob")?;
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        Ok(out)
    }

    #[test]
    fn detects_magic() {
        assert_eq!(detect(&[]), Compression::None);
        assert_eq!(detect(&[0x1F, 0x8B]), Compression::None);
        assert_eq!(detect(&[0x1F, 0x8B, 0x08, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xB5, 0x2F, 0xFD]), Compression::Zstd);
        assert_eq!(detect(&0x184D_2A53u32.to_le_bytes()), Compression::Zstd);
        assert_eq!(detect(&0x184D_2A60u32.to_le_bytes()), Compression::None);
        assert_eq!(detect(b"ustar tar header"), Compression::None);
    }

    #[test]
    fn round_trips_every_codec() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = encode(c, &data);
            let mut dec = Decompressor::new(&blob[..], Some(c), "b").unwrap();
            assert_eq!(dec.compression(), c);
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn decodes_concatenated_gzip_members_and_zstd_frames() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut blob = encode(c, b"hello ");
            blob.extend(encode(c, b"world"));
            assert_eq!(decode(&blob, Some(c)).unwrap(), b"hello world");
        }
    }

    #[test]
    fn skips_zstd_skippable_frames() {
        let mut blob = Vec::new();
        blob.extend(0x184D_2A50u32.to_le_bytes());
        blob.extend(3u32.to_le_bytes());
        blob.extend(b"abc");
        blob.extend(encode(Compression::Zstd, b"payload"));
        blob.extend(0x184D_2A5Fu32.to_le_bytes());
        blob.extend(0u32.to_le_bytes());
        assert_eq!(decode(&blob, Some(Compression::Zstd)).unwrap(), b"payload");
    }

    #[test]
    fn mismatch_names_the_blob() {
        let blob = encode(Compression::Gzip, b"x");
        let err = decode(&blob, Some(Compression::Zstd)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("test-blob"), "{err}");
        let err = decode(b"plain tar bytes", Some(Compression::Gzip)).unwrap_err();
        assert!(matches!(
            err,
            Error::Mismatch {
                detected: Compression::None,
                ..
            }
        ));
    }

    #[test]
    fn empty_stream_is_uncompressed_even_if_declared() {
        assert_eq!(decode(&[], Some(Compression::Gzip)).unwrap(), b"");
        assert_eq!(decode(&[], None).unwrap(), b"");
    }

    #[test]
    fn gzip_output_is_reproducible() {
        assert_eq!(
            encode(Compression::Gzip, b"same"),
            encode(Compression::Gzip, b"same")
        );
    }
}
