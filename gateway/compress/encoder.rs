//! One response's compressor. Every piece of the body the app sends is compressed and
//! flushed at once, so a streamed answer (an LLM's tokens as `text/plain`, a progress
//! page) reaches the client as it comes: the encoders' sync flush ends each piece on a
//! byte boundary the client can decode, for a few bytes each.

use std::io::{self, Write};
use std::sync::Mutex;

use bytes::Bytes;

use super::negotiate::Coding;

/// gzip level 5 and brotli quality 4 cost about what zstd level 3 does per byte
/// (docs/performance.md, "Compression").
const GZIP_LEVEL: u32 = 5;
const BROTLI_QUALITY: u32 = 4;
const ZSTD_LEVEL: i32 = 3;
/// 2^19 = 512 KiB of history: the memory one response's compressor holds stays small,
/// and pages compress nearly as well as with the 4 MiB default.
const WINDOW_LOG: u32 = 19;
const BROTLI_BUFFER: usize = 4096;

pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    // The zstd encoder is not `Sync`, which a Pingora module must be; the lock is never
    // contended (one request's task).
    Zstd(Mutex<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

impl Encoder {
    pub fn new(coding: Coding) -> io::Result<Encoder> {
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                WINDOW_LOG,
            ))),
            Coding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
                z.window_log(WINDOW_LOG)?;
                Encoder::Zstd(Mutex::new(z))
            }
        })
    }

    /// `input` compressed and flushed: all the client needs to decode it so far.
    pub fn chunk(&mut self, input: &[u8]) -> io::Result<Bytes> {
        fn step<W: Write>(
            w: &mut W,
            out: impl FnOnce(&mut W) -> &mut Vec<u8>,
            input: &[u8],
        ) -> io::Result<Bytes> {
            w.write_all(input)?;
            w.flush()?;
            Ok(std::mem::take(out(w)).into())
        }
        match self {
            Encoder::Gzip(g) => step(g, |g| g.get_mut(), input),
            Encoder::Brotli(b) => step(b.as_mut(), |b| b.get_mut(), input),
            Encoder::Zstd(z) => {
                let z = z.get_mut().map_err(|_| io::Error::other("poisoned"))?;
                step(z, |z| z.get_mut(), input)
            }
        }
    }

    /// The end of the compressed stream.
    pub fn finish(self) -> io::Result<Bytes> {
        Ok(match self {
            Encoder::Gzip(g) => g.finish()?,
            Encoder::Brotli(b) => (*b).into_inner(),
            Encoder::Zstd(z) => z
                .into_inner()
                .map_err(|_| io::Error::other("poisoned"))?
                .finish()?,
        }
        .into())
    }
}
