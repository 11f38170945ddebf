//! SHA-256 over XDR without intermediate buffers, and transaction hashes: the signature
//! payload's XDR is streamed straight into SHA-256 instead of building (and cloning into)
//! a `TransactionSignaturePayload`. The extractor hashes every envelope of every ledger,
//! and the synthetic chain generator every envelope it makes, so this is a hot path.

use sha2::{Digest, Sha256};
use stellar_xdr::{EnvelopeType, Limited, Limits, TransactionEnvelope, WriteXdr};

/// `io::Write` into a running SHA-256.
#[derive(Debug)]
pub struct HashWriter<'a>(pub &'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SHA-256 of a value's XDR. Encoding into a hasher cannot fail for values within their
/// bounds, which every constructed XDR value is.
pub fn xdr_sha256(value: &impl WriteXdr) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let _ = value.write_xdr(&mut Limited::new(HashWriter(&mut hasher), Limits::none()));
    hasher.finalize().into()
}

/// The hash a transaction is signed and known by: SHA-256 of the network id, the envelope
/// type and the transaction (`Transaction` or `FeeBumpTransaction`) XDR.
pub fn signature_payload_hash(
    network_id: &[u8; 32],
    kind: EnvelopeType,
    tx: &impl WriteXdr,
) -> Result<[u8; 32], stellar_xdr::Error> {
    let mut hasher = Sha256::new();
    hasher.update(network_id);
    {
        let mut out = Limited::new(HashWriter(&mut hasher), Limits::none());
        kind.write_xdr(&mut out)?;
        tx.write_xdr(&mut out)?;
    }
    Ok(hasher.finalize().into())
}

/// The network-specific hash of an envelope's transaction: the outer hash for a fee bump.
pub fn envelope_hash(
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
                return signature_payload_hash(network_id, EnvelopeType::Tx, &v1.tx);
            }
            TransactionEnvelope::TxFeeBump(fee_bump) => {
                return signature_payload_hash(network_id, EnvelopeType::TxFeeBump, &fee_bump.tx);
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// The hash of a fee bump's inner transaction.
pub fn inner_hash(
    envelope: &stellar_xdr::TransactionV1Envelope,
    network_id: &[u8; 32],
) -> Result<[u8; 32], stellar_xdr::Error> {
    signature_payload_hash(network_id, EnvelopeType::Tx, &envelope.tx)
}
