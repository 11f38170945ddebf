//! Transaction hashes, computed by streaming the signature payload's XDR straight into
//! SHA-256 instead of building (and cloning into) a `TransactionSignaturePayload`: the
//! extractor hashes every envelope of every ledger, so this is on the hot path.

use sha2::{Digest, Sha256};
use stellar_xdr::{EnvelopeType, Limited, Limits, TransactionEnvelope, WriteXdr};

/// `io::Write` into a running SHA-256.
pub(crate) struct HashWriter<'a>(pub &'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The network-specific hash of an envelope's transaction: the outer hash for a fee bump.
pub(crate) fn envelope_hash(
    envelope: &TransactionEnvelope,
    network_id: &[u8; 32],
) -> Result<[u8; 32], stellar_xdr::Error> {
    let mut hasher = Sha256::new();
    hasher.update(network_id);
    {
        let mut out = Limited::new(HashWriter(&mut hasher), Limits::none());
        match envelope {
            TransactionEnvelope::TxV0(v0) => {
                // A V0 transaction is hashed as the V1 `Transaction` it converts to. Its
                // XDR differs only in the source account: a bare key instead of a
                // `MuxedAccount`, whose ed25519 discriminant is 0; and the optional time
                // bounds encode exactly like `Preconditions` NONE (0) / TIME (1).
                EnvelopeType::Tx.write_xdr(&mut out)?;
                0i32.write_xdr(&mut out)?;
                v0.tx.write_xdr(&mut out)?;
            }
            TransactionEnvelope::Tx(v1) => {
                EnvelopeType::Tx.write_xdr(&mut out)?;
                v1.tx.write_xdr(&mut out)?;
            }
            TransactionEnvelope::TxFeeBump(fee_bump) => {
                EnvelopeType::TxFeeBump.write_xdr(&mut out)?;
                fee_bump.tx.write_xdr(&mut out)?;
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// The hash of a fee bump's inner transaction.
pub(crate) fn inner_hash(
    envelope: &stellar_xdr::TransactionV1Envelope,
    network_id: &[u8; 32],
) -> Result<[u8; 32], stellar_xdr::Error> {
    let mut hasher = Sha256::new();
    hasher.update(network_id);
    {
        let mut out = Limited::new(HashWriter(&mut hasher), Limits::none());
        EnvelopeType::Tx.write_xdr(&mut out)?;
        envelope.tx.write_xdr(&mut out)?;
    }
    Ok(hasher.finalize().into())
}
