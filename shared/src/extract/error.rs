//! The extractor's errors: each names the ledger and, when it is about one, the
//! transaction (application order and hash), so an operator can find the bad input.

use std::fmt;

/// Where in a ledger an error arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    /// 1-based application order.
    pub order: u32,
    /// The hash from the result pair, when known.
    pub hash: Option<[u8; 32]>,
}

impl fmt::Display for TxLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction #{}", self.order)?;
        if let Some(hash) = self.hash {
            write!(f, " ({})", hex::encode(hash))?;
        }
        Ok(())
    }
}

/// An extraction failure. Its message carries the whole story (ledger, transaction,
/// cause), so it exposes no separate `source()`.
#[derive(Debug, thiserror::Error)]
pub struct ExtractError {
    /// The ledger, when it could be told.
    pub ledger: Option<u32>,
    /// The transaction, when the error is about one.
    pub transaction: Option<TxLocation>,
    /// What went wrong.
    pub kind: ExtractErrorKind,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ledger {
            Some(seq) => write!(f, "ledger {seq}")?,
            None => write!(f, "ledger (unknown)")?,
        }
        if let Some(tx) = &self.transaction {
            write!(f, ", {tx}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl ExtractError {
    pub(crate) fn ledger(ledger: u32, kind: ExtractErrorKind) -> Self {
        Self {
            ledger: Some(ledger),
            transaction: None,
            kind,
        }
    }

    pub(crate) fn tx(ledger: u32, tx: TxLocation, kind: ExtractErrorKind) -> Self {
        Self {
            ledger: Some(ledger),
            transaction: Some(tx),
            kind,
        }
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        self.kind.label()
    }
}

/// The kinds of extraction failure.
#[derive(Debug, thiserror::Error)]
pub enum ExtractErrorKind {
    /// The bytes are not a valid `LedgerCloseMeta`: malformed, truncated, or a variant
    /// this build does not know (a newer protocol).
    #[error("malformed or truncated ledger XDR: {0}")]
    Decode(stellar_xdr::Error),
    /// A valid `LedgerCloseMeta` followed by bytes that are not part of it.
    #[error("{0} unexpected bytes after the ledger XDR")]
    TrailingBytes(usize),
    /// The transaction set and the processing list disagree in length.
    #[error("transaction set holds {envelopes} envelopes but {results} results were applied")]
    CountMismatch {
        /// Envelopes in the transaction set.
        envelopes: usize,
        /// Entries in `tx_processing`.
        results: usize,
    },
    /// A result names a transaction the transaction set does not hold.
    #[error("result has no envelope in the transaction set")]
    MissingEnvelope,
    /// Two envelopes of the set have the same hash.
    #[error("transaction set holds the envelope {} twice", hex::encode(.0))]
    DuplicateEnvelope([u8; 32]),
    /// A successful transaction's result does not list one result per operation.
    #[error("{operations} operations but {results} operation results")]
    OperationResultCount {
        /// Operations in the envelope.
        operations: usize,
        /// Results in the transaction result.
        results: usize,
    },
    /// An operation's result is of another operation type, or not a success although the
    /// transaction succeeded.
    #[error("operation {op_index} has an inconsistent result: {detail}")]
    InconsistentResult {
        /// 1-based operation index.
        op_index: u32,
        /// What was found.
        detail: &'static str,
    },
    /// An amount does not fit where it must go.
    #[error("operation {op_index}: amount overflows")]
    AmountOverflow {
        /// 1-based operation index.
        op_index: u32,
    },
    /// The position does not fit a SEP-35 id.
    #[error(transparent)]
    Toid(#[from] crate::toid::ToidError),
    /// Re-encoding an envelope to hash it failed.
    #[error("cannot encode the envelope to hash it: {0}")]
    Hash(stellar_xdr::Error),
    /// The contents do not hash to what the header says: corrupted or forged.
    #[error("{check} mismatch: the header says {}, the contents hash to {}", hex::encode(.expected), hex::encode(.computed))]
    HashMismatch {
        /// Which hash.
        check: super::verify::HashCheck,
        /// What the header (or header entry) says.
        expected: [u8; 32],
        /// What the contents hash to.
        computed: [u8; 32],
    },
}

impl ExtractErrorKind {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Decode(_) => "decode",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::CountMismatch { .. } => "count_mismatch",
            Self::MissingEnvelope => "missing_envelope",
            Self::DuplicateEnvelope(_) => "duplicate_envelope",
            Self::OperationResultCount { .. } => "operation_result_count",
            Self::InconsistentResult { .. } => "inconsistent_result",
            Self::AmountOverflow { .. } => "amount_overflow",
            Self::Toid(_) => "toid",
            Self::Hash(_) => "hash",
            Self::HashMismatch { check, .. } => check.label(),
        }
    }
}
