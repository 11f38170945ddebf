//! The shared core of the Stellar payments indexer: the domain model (payments, assets,
//! accounts, ids), the pure extraction of payments from `LedgerCloseMeta` XDR, readers for
//! the ledger file formats, and the Horizon-shaped JSON rendering of records.

pub mod address;
pub mod amount;
pub mod asset;
pub mod datalake;
pub mod extract;
pub mod hashing;
pub mod horizon;
pub mod ledger_file;
pub mod network;
pub mod payment;
#[cfg(feature = "pg-tls")]
pub mod pgtls;
#[cfg(feature = "redis-tls")]
pub mod redistls;
#[cfg(feature = "shutdown")]
pub mod shutdown;
pub mod stored;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod toid;

pub use extract::{decode_ledger, extract_payments, ExtractError, ExtractErrorKind, Extractor};
pub use network::Network;
pub use payment::{LedgerPayments, PaymentKind, PaymentRecord, PaymentType, TransactionContext};
