//! The Stellar data lake layout (SEP-54, as the data lake exporter writes it): zstd
//! `LedgerCloseMetaBatch` files named by ledger range under partition folders, plus a
//! JSON configuration with the network and the batch and partition sizes.
//!
//! ```text
//! <root>/config.json                       (older exports: <root>/.config.json)
//! <root>/<ledgers>/FFFFFFFF--0-63999/FFFFFFFD--2.xdr.zst
//! ```
//! Names start with `0xFFFFFFFF - first ledger` in hex, so listings sort newest first.
//! Older exports end in `.xdr.zstd`; both are read, `.xdr.zst` is written.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stellar_xdr::{LedgerCloseMetaBatch, Limits, WriteXdr};

use crate::ledger_file::MAX_DECOMPRESSED_BYTES;

/// How ledgers are grouped into files and folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Ledgers in one batch file.
    pub ledgers_per_batch: u32,
    /// Batch files in one partition folder (1: no partition folders).
    pub batches_per_partition: u32,
}

impl Schema {
    /// First ledger of the batch holding `seq`.
    pub fn batch_start(&self, seq: u32) -> u32 {
        seq - seq % self.ledgers_per_batch.max(1)
    }

    /// Last ledger of the batch holding `seq`.
    pub fn batch_end(&self, seq: u32) -> u32 {
        self.batch_start(seq)
            .saturating_add(self.ledgers_per_batch.max(1) - 1)
    }

    fn partition_span(&self) -> u32 {
        self.ledgers_per_batch
            .max(1)
            .saturating_mul(self.batches_per_partition.max(1))
    }

    /// The partition folder of `seq`, if partitions are used.
    pub fn partition_name(&self, seq: u32) -> Option<String> {
        if self.batches_per_partition <= 1 {
            return None;
        }
        let start = seq - seq % self.partition_span();
        let end = start.saturating_add(self.partition_span() - 1);
        Some(format!("{:08X}--{start}-{end}", u32::MAX - start))
    }

    /// The batch file name of `seq`, without the compression suffix.
    pub fn batch_stem(&self, seq: u32) -> String {
        let start = self.batch_start(seq);
        if self.ledgers_per_batch <= 1 {
            format!("{:08X}--{start}", u32::MAX - start)
        } else {
            format!("{:08X}--{start}-{}", u32::MAX - start, self.batch_end(seq))
        }
    }

    /// The batch file of `seq`, relative to the ledgers folder.
    pub fn batch_path(&self, seq: u32, suffix: &str) -> PathBuf {
        let file = format!("{}{suffix}", self.batch_stem(seq));
        match self.partition_name(seq) {
            Some(partition) => Path::new(&partition).join(file),
            None => PathBuf::from(file),
        }
    }
}

/// The data lake's configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The network the ledgers belong to.
    pub network_passphrase: String,
    /// The ledgers folder, relative to the root (empty: the root itself).
    #[serde(default)]
    pub ledgers_path: String,
    /// Compression: `zstd`.
    #[serde(default = "zstd_name")]
    pub compression: String,
    /// Ledgers per batch file (`ledgersPerFile` in older exports).
    #[serde(alias = "ledgersPerFile")]
    pub ledgers_per_batch: u32,
    /// Batches per partition (`filesPerPartition` in older exports).
    #[serde(alias = "filesPerPartition")]
    pub batches_per_partition: u32,
}

fn zstd_name() -> String {
    "zstd".to_owned()
}

/// Why the data lake could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataLakeError {
    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
    /// The configuration is missing or invalid.
    #[error("{}: invalid data lake configuration: {reason}", path.display())]
    Config {
        /// The file (or root).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No batch file holds this ledger.
    #[error("ledger {0} is not in the data lake")]
    Missing(u32),
    /// A batch file is corrupt or does not hold what its name says.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A data lake on the local file system.
#[derive(Clone, Debug)]
pub struct DataLake {
    root: PathBuf,
    config: Config,
}

const CONFIG_NAMES: [&str; 2] = ["config.json", ".config.json"];
const SUFFIXES: [&str; 2] = [".xdr.zst", ".xdr.zstd"];

impl DataLake {
    /// Opens the data lake at `root` by its configuration file.
    pub fn open(root: &Path) -> Result<Self, DataLakeError> {
        for name in CONFIG_NAMES {
            let path = root.join(name);
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|error| DataLakeError::Io {
                path: path.clone(),
                error,
            })?;
            let config: Config =
                serde_json::from_str(&text).map_err(|e| DataLakeError::Config {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if config.compression != "zstd" {
                return Err(DataLakeError::Config {
                    path,
                    reason: format!("unsupported compression {:?}", config.compression),
                });
            }
            if config.ledgers_per_batch == 0 || config.batches_per_partition == 0 {
                return Err(DataLakeError::Config {
                    path,
                    reason: "batch and partition sizes must be positive".into(),
                });
            }
            return Ok(Self {
                root: root.to_owned(),
                config,
            });
        }
        Err(DataLakeError::Config {
            path: root.to_owned(),
            reason: "no config.json or .config.json".into(),
        })
    }

    /// Creates a data lake at `root` (writing its configuration) for the generator.
    pub fn create(root: &Path, config: Config) -> Result<Self, DataLakeError> {
        let path = root.join(CONFIG_NAMES[0]);
        std::fs::create_dir_all(root).map_err(|error| DataLakeError::Io {
            path: root.to_owned(),
            error,
        })?;
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        std::fs::write(&path, text).map_err(|error| DataLakeError::Io { path, error })?;
        Ok(Self {
            root: root.to_owned(),
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its layout.
    pub fn schema(&self) -> Schema {
        Schema {
            ledgers_per_batch: self.config.ledgers_per_batch,
            batches_per_partition: self.config.batches_per_partition,
        }
    }

    fn ledgers_dir(&self) -> PathBuf {
        self.root
            .join(self.config.ledgers_path.trim_start_matches('/'))
    }

    /// The batch file holding `seq`, if present.
    pub fn batch_file(&self, seq: u32) -> Option<PathBuf> {
        SUFFIXES
            .iter()
            .map(|suffix| {
                self.ledgers_dir()
                    .join(self.schema().batch_path(seq, suffix))
            })
            .find(|path| path.is_file())
    }

    /// The uncompressed `LedgerCloseMetaBatch` XDR of the batch holding `seq`.
    pub fn read_batch_xdr(&self, seq: u32) -> Result<Vec<u8>, DataLakeError> {
        let path = self.batch_file(seq).ok_or(DataLakeError::Missing(seq))?;
        let file = std::fs::File::open(&path).map_err(|error| DataLakeError::Io {
            path: path.clone(),
            error,
        })?;
        let mut out = Vec::new();
        let decoder =
            zstd::stream::read::Decoder::new(file).map_err(|error| DataLakeError::Io {
                path: path.clone(),
                error,
            })?;
        decoder
            .take(MAX_DECOMPRESSED_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataLakeError::Corrupt {
                path: path.clone(),
                reason: format!("zstd: {e}"),
            })?;
        if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(DataLakeError::Corrupt {
                path,
                reason: "decompressed batch too large".into(),
            });
        }
        Ok(out)
    }

    /// Writes one batch (its ledgers must be exactly one batch of the schema).
    pub fn write_batch(
        &self,
        batch: &LedgerCloseMetaBatch,
        level: i32,
    ) -> Result<PathBuf, DataLakeError> {
        let schema = self.schema();
        let path = self
            .ledgers_dir()
            .join(schema.batch_path(batch.start_sequence, SUFFIXES[0]));
        if batch.start_sequence != schema.batch_start(batch.start_sequence)
            || batch.end_sequence != schema.batch_end(batch.start_sequence)
        {
            return Err(DataLakeError::Corrupt {
                path,
                reason: format!(
                    "batch {}-{} does not match the schema",
                    batch.start_sequence, batch.end_sequence
                ),
            });
        }
        let xdr = batch
            .to_xdr(Limits::none())
            .map_err(|e| DataLakeError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let compressed =
            zstd::encode_all(xdr.as_slice(), level).map_err(|error| DataLakeError::Io {
                path: path.clone(),
                error,
            })?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| DataLakeError::Io {
                path: parent.to_owned(),
                error,
            })?;
        }
        // Write then rename, so a reader never sees half a file.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, compressed).map_err(|error| DataLakeError::Io {
            path: partial.clone(),
            error,
        })?;
        std::fs::rename(&partial, &path).map_err(|error| DataLakeError::Io {
            path: path.clone(),
            error,
        })?;
        Ok(path)
    }

    /// The ledgers present, as (first, last) of the contiguous span found by listing
    /// the batch files; `None` when there are none.
    pub fn available_range(&self) -> Result<Option<(u32, u32)>, DataLakeError> {
        let mut starts = Vec::new();
        let dir = self.ledgers_dir();
        let mut folders = vec![dir.clone()];
        while let Some(folder) = folders.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|error| DataLakeError::Io {
                path: folder.clone(),
                error,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && folder == dir {
                    folders.push(path);
                } else if let Some(start) = SUFFIXES
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .and_then(parse_stem)
                {
                    starts.push(start);
                }
            }
        }
        let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max()) else {
            return Ok(None);
        };
        Ok(Some((*first, self.schema().batch_end(*last))))
    }
}

/// The first ledger named by a batch file stem (`FFFFFFFD--2` or `FFFFFFFD--2-3`).
fn parse_stem(stem: &str) -> Option<u32> {
    let (_, range) = stem.split_once("--")?;
    range.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_sep_54() {
        let schema = Schema {
            ledgers_per_batch: 2,
            batches_per_partition: 8,
        };
        assert_eq!(
            schema.batch_path(19, ".xdr.zst"),
            PathBuf::from("FFFFFFEF--16-31/FFFFFFED--18-19.xdr.zst")
        );
        assert_eq!(
            schema.batch_path(2, ".xdr.zst"),
            PathBuf::from("FFFFFFFF--0-15/FFFFFFFD--2-3.xdr.zst")
        );
        let single = Schema {
            ledgers_per_batch: 1,
            batches_per_partition: 64000,
        };
        assert_eq!(single.batch_stem(53312000), "FCD285FF--53312000");
        let flat = Schema {
            ledgers_per_batch: 1,
            batches_per_partition: 1,
        };
        assert_eq!(
            flat.batch_path(2, ".xdr.zst"),
            PathBuf::from("FFFFFFFD--2.xdr.zst")
        );
        assert_eq!(parse_stem("FFFFFFED--18-19"), Some(18));
        assert_eq!(parse_stem("FCD285FF--53312000"), Some(53312000));
    }
}
