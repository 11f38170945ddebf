//! Reading recorded ledgers from disk, in every format the Stellar tooling produces:
//! raw `LedgerCloseMeta` XDR (one or several back to back), the same gzipped, text files
//! with one base64 `LedgerCloseMeta` a line (optionally gzipped), and data-lake files
//! (zstd-compressed `LedgerCloseMetaBatch`, as the data lake exporter writes them).

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch, Limited, Limits, ReadXdr};

use crate::extract::{decode_xdr, ExtractError};

/// Decompressed files larger than this are refused rather than read into memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// The on-disk formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerFileFormat {
    /// Raw XDR, one or more `LedgerCloseMeta` back to back.
    Xdr,
    /// Gzipped raw XDR.
    XdrGz,
    /// One base64 `LedgerCloseMeta` a line.
    Base64Lines,
    /// Gzipped base64 lines.
    Base64LinesGz,
    /// A data-lake file: zstd of one `LedgerCloseMetaBatch`.
    DataLakeBatch,
}

impl LedgerFileFormat {
    /// Tells the format from the file name, then from the first bytes.
    pub fn detect(path: &Path, head: &[u8]) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let gz = head.starts_with(&[0x1f, 0x8b]);
        if name.ends_with(".zstd")
            || name.ends_with(".zst")
            || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        {
            return Self::DataLakeBatch;
        }
        let text = name.ends_with(".txt")
            || name.ends_with(".txt.gz")
            || name.ends_with(".b64")
            || name.ends_with(".b64.gz")
            || name.ends_with(".base64")
            || name.ends_with(".base64.gz");
        match (text, gz) {
            (true, true) => Self::Base64LinesGz,
            (true, false) => Self::Base64Lines,
            (false, true) => Self::XdrGz,
            (false, false) => Self::Xdr,
        }
    }
}

/// A ledger file that could not be read. The message names the file and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct LedgerFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: LedgerFileErrorKind,
}

/// Why a ledger file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerFileErrorKind {
    /// Reading or decompressing failed.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    /// The decompressed content is larger than [`MAX_DECOMPRESSED_BYTES`].
    #[error("decompressed content exceeds {MAX_DECOMPRESSED_BYTES} bytes")]
    TooLarge,
    /// A line is not base64.
    #[error("line {line}: not base64: {error}")]
    Base64 {
        /// 1-based line number.
        line: usize,
        /// The decoder's complaint.
        error: base64::DecodeError,
    },
    /// A ledger's XDR is malformed.
    #[error("{position}: {error}")]
    Decode {
        /// Which ledger of the file (line, or index in a stream or batch).
        position: String,
        /// The decoder's complaint.
        error: Box<ExtractError>,
    },
    /// A batch's declared range disagrees with the ledgers it holds.
    #[error("batch declares ledgers {start}-{end} but holds {held:?}")]
    BatchRange {
        /// Declared first ledger.
        start: u32,
        /// Declared last ledger.
        end: u32,
        /// Sequences actually held.
        held: Vec<u32>,
    },
}

impl From<std::io::Error> for LedgerFileErrorKind {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Reads every ledger of a file, in file order.
pub fn read_ledger_file(path: &Path) -> Result<Vec<LedgerCloseMeta>, LedgerFileError> {
    let error = |kind| LedgerFileError {
        path: path.to_owned(),
        kind,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.into()))?;
    read_ledger_bytes(path, &bytes).map_err(error)
}

/// Reads every ledger from a file's bytes; `path` only serves to tell the format.
pub fn read_ledger_bytes(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<LedgerCloseMeta>, LedgerFileErrorKind> {
    match LedgerFileFormat::detect(path, bytes) {
        LedgerFileFormat::Xdr => decode_stream(bytes),
        LedgerFileFormat::XdrGz => decode_stream(&gunzip(bytes)?),
        LedgerFileFormat::Base64Lines => decode_lines(bytes),
        LedgerFileFormat::Base64LinesGz => decode_lines(&gunzip(bytes)?),
        LedgerFileFormat::DataLakeBatch => {
            Ok(decode_batch(&unzstd(bytes)?)?.ledger_close_metas.to_vec())
        }
    }
}

/// Reads the raw XDR of each ledger of a file, for callers that decode themselves
/// (benchmarks, the RPC simulator serving `metadataXdr`). Batches are decoded and
/// re-encoded.
pub fn read_ledger_xdr(path: &Path) -> Result<Vec<Vec<u8>>, LedgerFileError> {
    use stellar_xdr::WriteXdr;
    let error = |kind| LedgerFileError {
        path: path.to_owned(),
        kind,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.into()))?;
    let kind = |e: stellar_xdr::Error| {
        error(LedgerFileErrorKind::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        )))
    };
    match LedgerFileFormat::detect(path, &bytes) {
        LedgerFileFormat::Xdr | LedgerFileFormat::XdrGz => {
            let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
                gunzip(&bytes).map_err(error)?
            } else {
                bytes
            };
            // Split a stream into its ledgers by decoding, then keep each one's bytes.
            let ledgers = decode_stream(&raw).map_err(error)?;
            ledgers
                .iter()
                .map(|l| l.to_xdr(Limits::none()).map_err(kind))
                .collect()
        }
        LedgerFileFormat::Base64Lines | LedgerFileFormat::Base64LinesGz => {
            let text = if bytes.starts_with(&[0x1f, 0x8b]) {
                gunzip(&bytes).map_err(error)?
            } else {
                bytes
            };
            base64_lines(&text)
                .map(|r| r.map(|(_, b)| b).map_err(error))
                .collect()
        }
        LedgerFileFormat::DataLakeBatch => {
            let batch = decode_batch(&unzstd(&bytes).map_err(error)?).map_err(error)?;
            batch
                .ledger_close_metas
                .iter()
                .map(|l| l.to_xdr(Limits::none()).map_err(kind))
                .collect()
        }
    }
}

/// The ledger files of a directory (any format), sorted by name.
pub fn ledger_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_ledger = [
            ".xdr",
            ".xdr.gz",
            ".xdr.zstd",
            ".xdr.zst",
            ".txt",
            ".txt.gz",
            ".b64",
            ".b64.gz",
        ]
        .iter()
        .any(|ext| name.ends_with(ext));
        if path.is_file() && is_ledger {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes a data-lake batch from its uncompressed XDR and checks its declared range.
pub fn decode_batch(xdr: &[u8]) -> Result<LedgerCloseMetaBatch, LedgerFileErrorKind> {
    let batch: LedgerCloseMetaBatch =
        decode_xdr(xdr).map_err(|error| LedgerFileErrorKind::Decode {
            position: "batch".into(),
            error: Box::new(error),
        })?;
    let held: Vec<u32> = batch.ledger_close_metas.iter().map(ledger_seq).collect();
    let expected: Vec<u32> = (batch.start_sequence..=batch.end_sequence).collect();
    if held != expected {
        return Err(LedgerFileErrorKind::BatchRange {
            start: batch.start_sequence,
            end: batch.end_sequence,
            held,
        });
    }
    Ok(batch)
}

/// The sequence number of a ledger.
pub fn ledger_seq(meta: &LedgerCloseMeta) -> u32 {
    match meta {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
    }
}

fn decode_stream(bytes: &[u8]) -> Result<Vec<LedgerCloseMeta>, LedgerFileErrorKind> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let limits = Limits {
            depth: 512,
            len: rest.len(),
        };
        let mut reader = Limited::new(std::io::Cursor::new(rest), limits);
        let meta =
            LedgerCloseMeta::read_xdr(&mut reader).map_err(|e| LedgerFileErrorKind::Decode {
                position: format!("ledger #{} at byte {offset}", out.len() + 1),
                error: Box::new(ExtractError {
                    ledger: None,
                    transaction: None,
                    kind: crate::extract::ExtractErrorKind::Decode(e),
                }),
            })?;
        offset += reader.inner.position() as usize;
        out.push(meta);
    }
    Ok(out)
}

fn base64_lines(
    text: &[u8],
) -> impl Iterator<Item = Result<(usize, Vec<u8>), LedgerFileErrorKind>> + '_ {
    text.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(line, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|bytes| (line, bytes))
                .map_err(|error| LedgerFileErrorKind::Base64 { line, error })
        })
}

fn decode_lines(text: &[u8]) -> Result<Vec<LedgerCloseMeta>, LedgerFileErrorKind> {
    base64_lines(text)
        .map(|item| {
            let (line, bytes) = item?;
            decode_xdr(&bytes).map_err(|error| LedgerFileErrorKind::Decode {
                position: format!("line {line}"),
                error: Box::new(error),
            })
        })
        .collect()
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, LedgerFileErrorKind> {
    bounded_read(flate2::read::MultiGzDecoder::new(bytes))
}

fn unzstd(bytes: &[u8]) -> Result<Vec<u8>, LedgerFileErrorKind> {
    bounded_read(zstd::stream::read::Decoder::new(bytes)?)
}

fn bounded_read(reader: impl Read) -> Result<Vec<u8>, LedgerFileErrorKind> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(LedgerFileErrorKind::TooLarge);
    }
    Ok(out)
}
