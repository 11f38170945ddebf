//! Turns one `LedgerCloseMeta` into that ledger's payment records, with no I/O.
//!
//! Every `LedgerCloseMeta` version (0-2) and transaction meta version (0-4) is read; the
//! transaction set (classic, generalized, parallel Soroban phases) is joined to the
//! processing list by transaction hash, because the set is in hash order while
//! `tx_processing` is in application order, which is what the SEP-35 ids follow.

mod error;
mod events;
mod scan;
pub mod verify;

use std::sync::Arc;

use stellar_xdr::{
    ClaimAtom, GeneralizedTransactionSet, LedgerCloseMeta, LedgerHeaderHistoryEntry, Limits,
    OperationBody, OperationResult, OperationResultTr, ReadXdr, ScVal, TransactionEnvelope,
    TransactionMeta, TransactionPhase, TransactionResultPair, TransactionResultResult,
    TxSetComponent, WriteXdr,
};

pub use error::{ExtractError, ExtractErrorKind, TxLocation};
use events::{sac_balance_change, topic_symbol, SacRegistry};
pub use verify::{verify_ledger, HashCheck};

use crate::address::{AccountId, Address, MuxedAccountId};
use crate::asset::Asset;
use crate::hashing;
use crate::network::Network;
use crate::payment::{
    HostFunction, LedgerInfo, LedgerPayments, LedgerStats, Memo, PathPaymentStrictness,
    PaymentKind, PaymentRecord, PaymentType, TransactionContext,
};
use crate::toid::Toid;

/// How deep XDR nesting may go when decoding untrusted bytes (contract values nest).
const MAX_XDR_DEPTH: u32 = 512;

/// No `LedgerCloseMeta` is shorter than this (its ledger header alone is longer): bounds
/// what an untrusted ledger count may reserve.
const MIN_LEDGER_XDR_BYTES: usize = 256;

/// Decodes one `LedgerCloseMeta` from its XDR. The whole input must be one value: the
/// decoder is bounded by the input length, so hostile length prefixes cannot make it
/// allocate more than the input holds.
pub fn decode_ledger(bytes: &[u8]) -> Result<LedgerCloseMeta, ExtractError> {
    decode_xdr(bytes)
}

/// Decodes any single XDR value with the same bounds as [`decode_ledger`].
pub fn decode_xdr<T: ReadXdr>(bytes: &[u8]) -> Result<T, ExtractError> {
    let limits = Limits {
        depth: MAX_XDR_DEPTH,
        len: bytes.len(),
    };
    let mut reader = stellar_xdr::Limited::new(std::io::Cursor::new(bytes), limits);
    let value = T::read_xdr(&mut reader).map_err(|e| ExtractError {
        ledger: None,
        transaction: None,
        kind: ExtractErrorKind::Decode(e),
    })?;
    let consumed = reader.inner.position() as usize;
    if consumed != bytes.len() {
        return Err(ExtractError {
            ledger: None,
            transaction: None,
            kind: ExtractErrorKind::TrailingBytes(bytes.len() - consumed),
        });
    }
    Ok(value)
}

/// Extracts payments for one network. Keeps a cache of Stellar Asset Contract ids, so
/// reuse one extractor for many ledgers (one per thread).
#[derive(Debug, Clone)]
pub struct Extractor {
    network: Network,
    sac: SacRegistry,
}

impl Extractor {
    /// An extractor for the network with this passphrase.
    pub fn new(network: Network) -> Self {
        Self {
            network,
            sac: SacRegistry::default(),
        }
    }

    /// The network it extracts for.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Decodes and extracts one ledger's XDR. This is the fast path: only the parts of
    /// the ledger that payments need are materialised (see the `scan` module); the rest
    /// is validated and stepped over.
    pub fn extract_xdr(&mut self, bytes: &[u8]) -> Result<LedgerPayments, ExtractError> {
        let (scanned, consumed) =
            scan::scan_ledger(bytes, MAX_XDR_DEPTH).map_err(|(e, ledger)| ExtractError {
                ledger,
                transaction: None,
                kind: ExtractErrorKind::Decode(e),
            })?;
        if consumed != bytes.len() {
            return Err(ExtractError::ledger(
                scanned.header.header.ledger_seq,
                ExtractErrorKind::TrailingBytes(bytes.len() - consumed),
            ));
        }
        let payments = self.extract_view(&LedgerView::Scanned(&scanned))?;
        verify::check(&scanned.header, &scanned.hashes)?;
        Ok(payments)
    }

    /// Extracts every ledger of a `LedgerCloseMetaBatch` (a data-lake file, uncompressed)
    /// through the fast path, checking that the batch holds exactly the ledgers its
    /// header declares.
    pub fn extract_batch_xdr(&mut self, bytes: &[u8]) -> Result<Vec<LedgerPayments>, ExtractError> {
        let decode_error = |ledger: Option<u32>, e: stellar_xdr::Error| ExtractError {
            ledger,
            transaction: None,
            kind: ExtractErrorKind::Decode(e),
        };
        let word = |at: usize| -> Result<u32, ExtractError> {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| decode_error(None, stellar_xdr::Error::LengthLimitExceeded))
        };
        let (start, end, count) = (word(0)?, word(4)?, word(8)?);
        if end < start || u64::from(count) != u64::from(end - start) + 1 {
            return Err(decode_error(Some(start), stellar_xdr::Error::Invalid));
        }
        let mut offset = 12;
        // The count is untrusted: room is reserved only for as many ledgers as the bytes
        // that follow can hold (hostile headers declare billions).
        let room = bytes.len().saturating_sub(offset) / MIN_LEDGER_XDR_BYTES;
        let mut out = Vec::with_capacity((count as usize).min(room));
        for expected in start..=end {
            let (scanned, consumed) = scan::scan_ledger(&bytes[offset..], MAX_XDR_DEPTH)
                .map_err(|(e, ledger)| decode_error(ledger.or(Some(expected)), e))?;
            offset += consumed;
            let payments = self.extract_view(&LedgerView::Scanned(&scanned))?;
            verify::check(&scanned.header, &scanned.hashes)?;
            if payments.ledger.sequence != expected {
                return Err(decode_error(Some(expected), stellar_xdr::Error::Invalid));
            }
            out.push(payments);
        }
        if offset != bytes.len() {
            return Err(ExtractError::ledger(
                end,
                ExtractErrorKind::TrailingBytes(bytes.len() - offset),
            ));
        }
        Ok(out)
    }

    /// Extracts the payments of one decoded ledger.
    pub fn extract(&mut self, meta: &LedgerCloseMeta) -> Result<LedgerPayments, ExtractError> {
        let payments = self.extract_view(&LedgerView::Full(meta))?;
        verify_ledger(meta)?;
        Ok(payments)
    }

    fn extract_view(&mut self, ledger: &LedgerView<'_>) -> Result<LedgerPayments, ExtractError> {
        let info = ledger.info();
        let seq = info.sequence;
        let network_id = self.network.id();

        let envelopes = ledger.envelopes();
        let processing = ledger.processing();
        if envelopes.len() != processing.len() {
            return Err(ExtractError::ledger(
                seq,
                ExtractErrorKind::CountMismatch {
                    envelopes: envelopes.len(),
                    results: processing.len(),
                },
            ));
        }
        let mut by_hash = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let hash = hashing::envelope_hash(envelope, &network_id)
                .map_err(|e| ExtractError::ledger(seq, ExtractErrorKind::Hash(e)))?;
            by_hash.push((hash, envelope));
        }
        by_hash.sort_unstable_by_key(|(hash, _)| *hash);
        if let Some(pair) = by_hash.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ExtractError::ledger(
                seq,
                ExtractErrorKind::DuplicateEnvelope(pair[0].0),
            ));
        }

        let mut out = LedgerPayments {
            ledger: info,
            transactions: Vec::new(),
            payments: Vec::new(),
            stats: LedgerStats::default(),
        };
        for (index, (pair, events)) in processing.into_iter().enumerate() {
            let order = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let location = TxLocation {
                order,
                hash: Some(pair.transaction_hash.0),
            };
            let envelope = by_hash
                .binary_search_by(|(hash, _)| hash.cmp(&pair.transaction_hash.0))
                .map(|i| by_hash[i].1)
                .map_err(|_| ExtractError::tx(seq, location, ExtractErrorKind::MissingEnvelope))?;
            let tx = TxInput {
                order,
                pair,
                envelope,
                events,
            };
            self.extract_transaction(&tx, &mut out)
                .map_err(|kind| ExtractError::tx(seq, location, kind))?;
        }
        Ok(out)
    }

    fn extract_transaction(
        &mut self,
        tx: &TxInput<'_>,
        out: &mut LedgerPayments,
    ) -> Result<(), ExtractErrorKind> {
        let network_id = self.network.id();
        let body = TxBody::of(tx.envelope);
        let outcome = TxOutcome::of(tx.pair);
        let stats = &mut out.stats;
        stats.transactions += 1;
        stats.operations += body.operations.len() as u32;
        if outcome.successful {
            stats.successful_transactions += 1;
        }
        let op_results = match (outcome.successful, outcome.op_results) {
            (true, Some(results)) => {
                if results.len() != body.operations.len() {
                    return Err(ExtractErrorKind::OperationResultCount {
                        operations: body.operations.len(),
                        results: results.len(),
                    });
                }
                Some(results)
            }
            (true, None) => {
                return Err(ExtractErrorKind::OperationResultCount {
                    operations: body.operations.len(),
                    results: 0,
                })
            }
            (false, _) => None,
        };

        let mut context: Option<Arc<TransactionContext>> = None;
        for (op_offset, operation) in body.operations.iter().enumerate() {
            let op_index = op_offset as u32 + 1;
            let Some(payment_type) = payment_type_of(&operation.body) else {
                if outcome.successful {
                    count_events(
                        stats,
                        tx.events.for_operation(op_offset),
                        &mut self.sac,
                        &network_id,
                    );
                }
                continue;
            };
            let counts = if outcome.successful {
                &mut stats.payment_ops_successful
            } else {
                &mut stats.payment_ops_failed
            };
            *counts.entry(payment_type).or_default() += 1;

            let events = tx.events.for_operation(op_offset);
            if outcome.successful {
                count_events(stats, events, &mut self.sac, &network_id);
            }
            let result = op_results.map(|r| &r[op_offset]);
            let source = operation
                .source_account
                .as_ref()
                .map_or(body.source, MuxedAccountId::from);
            let Some(kind) = self.payment_kind(&operation.body, result, events, op_index)? else {
                continue;
            };
            if matches!(kind, PaymentKind::InvokeHostFunction { .. }) {
                stats.invoke_host_function_payments += 1;
            }
            let transaction = match &context {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(transaction_context(
                        tx,
                        &body,
                        &outcome,
                        &out.ledger,
                        network_id,
                    )?);
                    out.transactions.push(c.clone());
                    context = Some(c.clone());
                    c
                }
            };
            out.payments.push(PaymentRecord {
                id: Toid::new(out.ledger.sequence, tx.order, op_index)?,
                source,
                kind,
                transaction,
            });
        }
        Ok(())
    }

    /// The payment an operation makes, or `None` when it is not one (an
    /// `invoke_host_function` without Stellar Asset Contract balance events).
    fn payment_kind(
        &mut self,
        body: &OperationBody,
        result: Option<&OperationResult>,
        events: &[stellar_xdr::ContractEvent],
        op_index: u32,
    ) -> Result<Option<PaymentKind>, ExtractErrorKind> {
        let inconsistent = |detail| ExtractErrorKind::InconsistentResult { op_index, detail };
        let inner = match result {
            None => None,
            Some(OperationResult::OpInner(tr)) => Some(tr),
            Some(_) => return Err(inconsistent("operation failed in a successful transaction")),
        };
        Ok(Some(match body {
            OperationBody::CreateAccount(op) => PaymentKind::CreateAccount {
                account: AccountId::from(&op.destination),
                starting_balance: op.starting_balance,
            },
            OperationBody::Payment(op) => PaymentKind::Payment {
                to: MuxedAccountId::from(&op.destination),
                asset: Asset::from(&op.asset),
                amount: op.amount,
            },
            OperationBody::PathPaymentStrictReceive(op) => {
                let source_amount = match inner {
                    None => 0,
                    Some(OperationResultTr::PathPaymentStrictReceive(
                        stellar_xdr::PathPaymentStrictReceiveResult::Success(success),
                    )) => amount_sent(&success.offers, success.last.amount)
                        .ok_or(ExtractErrorKind::AmountOverflow { op_index })?,
                    Some(_) => {
                        return Err(inconsistent(
                            "expected a path payment strict receive success",
                        ))
                    }
                };
                PaymentKind::PathPayment {
                    strict: PathPaymentStrictness::StrictReceive,
                    to: MuxedAccountId::from(&op.destination),
                    asset: Asset::from(&op.dest_asset),
                    amount: op.dest_amount,
                    source_asset: Asset::from(&op.send_asset),
                    source_amount,
                    limit: op.send_max,
                    path: op.path.iter().map(Asset::from).collect(),
                }
            }
            OperationBody::PathPaymentStrictSend(op) => {
                let amount = match inner {
                    None => 0,
                    Some(OperationResultTr::PathPaymentStrictSend(
                        stellar_xdr::PathPaymentStrictSendResult::Success(success),
                    )) => success.last.amount,
                    Some(_) => {
                        return Err(inconsistent("expected a path payment strict send success"))
                    }
                };
                PaymentKind::PathPayment {
                    strict: PathPaymentStrictness::StrictSend,
                    to: MuxedAccountId::from(&op.destination),
                    asset: Asset::from(&op.dest_asset),
                    amount,
                    source_asset: Asset::from(&op.send_asset),
                    source_amount: op.send_amount,
                    limit: op.dest_min,
                    path: op.path.iter().map(Asset::from).collect(),
                }
            }
            OperationBody::AccountMerge(into) => {
                let amount = match inner {
                    None => None,
                    Some(OperationResultTr::AccountMerge(
                        stellar_xdr::AccountMergeResult::Success(balance),
                    )) => Some(*balance),
                    Some(_) => return Err(inconsistent("expected an account merge success")),
                };
                PaymentKind::AccountMerge {
                    into: MuxedAccountId::from(into),
                    amount,
                }
            }
            OperationBody::InvokeHostFunction(op) => {
                if inner.is_none() {
                    // Failed transactions emit no events: never a payment.
                    return Ok(None);
                }
                let network_id = self.network.id();
                let balance_changes: Vec<_> = events
                    .iter()
                    .filter_map(|e| sac_balance_change(e, &mut self.sac, &network_id))
                    .collect();
                if balance_changes.is_empty() {
                    return Ok(None);
                }
                PaymentKind::InvokeHostFunction {
                    function: host_function(&op.host_function),
                    balance_changes,
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// Extracts one ledger with a throw-away extractor. Prefer keeping an [`Extractor`].
pub fn extract_payments(
    meta: &LedgerCloseMeta,
    network: &Network,
) -> Result<LedgerPayments, ExtractError> {
    Extractor::new(network.clone()).extract(meta)
}

/// What a strict-receive path payment spent, in the source asset: the amounts bought by
/// the first hop's offers (they all buy the source asset), or, with no offers crossed
/// (source asset = destination asset, empty path), the amount delivered.
fn amount_sent(offers: &[ClaimAtom], delivered: i64) -> Option<i64> {
    let Some(first) = offers.first() else {
        return Some(delivered);
    };
    let source_asset = claim_asset_bought(first);
    let mut total: i64 = 0;
    for offer in offers
        .iter()
        .take_while(|o| claim_asset_bought(o) == source_asset)
    {
        total = total.checked_add(claim_amount_bought(offer))?;
    }
    Some(total)
}

fn claim_asset_bought(atom: &ClaimAtom) -> &stellar_xdr::Asset {
    match atom {
        ClaimAtom::V0(a) => &a.asset_bought,
        ClaimAtom::OrderBook(a) => &a.asset_bought,
        ClaimAtom::LiquidityPool(a) => &a.asset_bought,
    }
}

fn claim_amount_bought(atom: &ClaimAtom) -> i64 {
    match atom {
        ClaimAtom::V0(a) => a.amount_bought,
        ClaimAtom::OrderBook(a) => a.amount_bought,
        ClaimAtom::LiquidityPool(a) => a.amount_bought,
    }
}

fn payment_type_of(body: &OperationBody) -> Option<PaymentType> {
    Some(match body {
        OperationBody::CreateAccount(_) => PaymentType::CreateAccount,
        OperationBody::Payment(_) => PaymentType::Payment,
        OperationBody::PathPaymentStrictReceive(_) => PaymentType::PathPaymentStrictReceive,
        OperationBody::PathPaymentStrictSend(_) => PaymentType::PathPaymentStrictSend,
        OperationBody::AccountMerge(_) => PaymentType::AccountMerge,
        OperationBody::InvokeHostFunction(_) => PaymentType::InvokeHostFunction,
        _ => return None,
    })
}

/// Where a transaction's contract events are.
#[derive(Clone, Copy)]
enum EventsRef<'a> {
    Meta(&'a TransactionMeta),
    Scanned(&'a scan::TxEvents),
}

impl<'a> EventsRef<'a> {
    /// The contract events an operation emitted: per operation in meta V4; in meta V3
    /// the Soroban events belong to the transaction's only operation. Older metas have
    /// none.
    fn for_operation(self, op_offset: usize) -> &'a [stellar_xdr::ContractEvent] {
        match self {
            Self::Scanned(events) => events.for_operation(op_offset),
            Self::Meta(TransactionMeta::V4(v4)) => v4
                .operations
                .get(op_offset)
                .map_or(&[], |op| op.events.as_slice()),
            Self::Meta(TransactionMeta::V3(v3)) if op_offset == 0 => v3
                .soroban_meta
                .as_ref()
                .map_or(&[], |s| s.events.as_slice()),
            Self::Meta(_) => &[],
        }
    }
}

fn count_events(
    stats: &mut LedgerStats,
    events: &[stellar_xdr::ContractEvent],
    sac: &mut SacRegistry,
    network_id: &[u8; 32],
) {
    for event in events {
        if topic_symbol(event) == Some(b"transfer".as_slice()) {
            stats.transfer_events_successful += 1;
        }
        if let Some(change) = sac_balance_change(event, sac, network_id) {
            *stats
                .sac_events_successful
                .entry(change.kind.as_str())
                .or_default() += 1;
        }
    }
}

fn host_function(function: &stellar_xdr::HostFunction) -> HostFunction {
    use stellar_xdr::{ContractIdPreimage, HostFunction as Hf};
    let create = |preimage: &ContractIdPreimage| match preimage {
        ContractIdPreimage::Address(from) => HostFunction::CreateContract {
            deployer: Some(Address::from_sc_address(&from.address)),
            salt: Some(from.salt.0),
            asset: None,
        },
        ContractIdPreimage::Asset(asset) => HostFunction::CreateContract {
            deployer: None,
            salt: None,
            asset: Some(Asset::from(asset)),
        },
    };
    match function {
        Hf::InvokeContract(args) => HostFunction::InvokeContract {
            contract: Address::from_sc_address(&args.contract_address),
            function: String::from_utf8_lossy(args.function_name.0.as_slice()).into_owned(),
            args: args.args.iter().map(sc_val_parameter).collect(),
        },
        Hf::CreateContract(args) => create(&args.contract_id_preimage),
        Hf::CreateContractV2(args) => create(&args.contract_id_preimage),
        Hf::UploadContractWasm(_) => HostFunction::UploadWasm,
    }
}

/// A contract argument as Horizon shows it: the value's XDR arm name and its base64 XDR.
pub fn sc_val_parameter(value: &ScVal) -> (String, String) {
    use base64::Engine as _;
    let type_name = match value {
        ScVal::Bool(_) => "B",
        ScVal::Void | ScVal::LedgerKeyContractInstance => "",
        ScVal::Error(_) => "Error",
        ScVal::U32(_) => "U32",
        ScVal::I32(_) => "I32",
        ScVal::U64(_) => "U64",
        ScVal::I64(_) => "I64",
        ScVal::Timepoint(_) => "Timepoint",
        ScVal::Duration(_) => "Duration",
        ScVal::U128(_) => "U128",
        ScVal::I128(_) => "I128",
        ScVal::U256(_) => "U256",
        ScVal::I256(_) => "I256",
        ScVal::Bytes(_) => "Bytes",
        ScVal::String(_) => "Str",
        ScVal::Symbol(_) => "Sym",
        ScVal::Vec(_) => "Vec",
        ScVal::Map(_) => "Map",
        ScVal::Address(_) => "Address",
        ScVal::ContractInstance(_) => "Instance",
        ScVal::LedgerKeyNonce(_) => "NonceKey",
        ScVal::ExecutableTag(_) => "ExecutableTag",
    };
    let value = value
        .to_xdr(Limits::none())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .unwrap_or_else(|_| "n/a".to_owned());
    (type_name.to_owned(), value)
}

/// One entry of `tx_processing`, with the envelope it was joined to.
struct TxInput<'a> {
    order: u32,
    pair: &'a TransactionResultPair,
    envelope: &'a TransactionEnvelope,
    events: EventsRef<'a>,
}

/// The parts of an envelope the extractor reads, whatever its version.
struct TxBody<'a> {
    source: MuxedAccountId,
    sequence: i64,
    fee_source: Option<MuxedAccountId>,
    max_fee: i64,
    memo: &'a stellar_xdr::Memo,
    time_bounds: Option<&'a stellar_xdr::TimeBounds>,
    operations: &'a [stellar_xdr::Operation],
    inner: Option<&'a stellar_xdr::TransactionV1Envelope>,
}

impl<'a> TxBody<'a> {
    fn of(envelope: &'a TransactionEnvelope) -> Self {
        fn v1(tx: &stellar_xdr::Transaction) -> (MuxedAccountId, Option<&stellar_xdr::TimeBounds>) {
            let bounds = match &tx.cond {
                stellar_xdr::Preconditions::None => None,
                stellar_xdr::Preconditions::Time(tb) => Some(tb),
                stellar_xdr::Preconditions::V2(p) => p.time_bounds.as_ref(),
            };
            (MuxedAccountId::from(&tx.source_account), bounds)
        }
        match envelope {
            TransactionEnvelope::TxV0(e) => TxBody {
                source: MuxedAccountId::plain(AccountId(e.tx.source_account_ed25519.0)),
                sequence: e.tx.seq_num.0,
                fee_source: None,
                max_fee: i64::from(e.tx.fee),
                memo: &e.tx.memo,
                time_bounds: e.tx.time_bounds.as_ref(),
                operations: e.tx.operations.as_slice(),
                inner: None,
            },
            TransactionEnvelope::Tx(e) => {
                let (source, time_bounds) = v1(&e.tx);
                TxBody {
                    source,
                    sequence: e.tx.seq_num.0,
                    fee_source: None,
                    max_fee: i64::from(e.tx.fee),
                    memo: &e.tx.memo,
                    time_bounds,
                    operations: e.tx.operations.as_slice(),
                    inner: None,
                }
            }
            TransactionEnvelope::TxFeeBump(fb) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &fb.tx.inner_tx;
                let (source, time_bounds) = v1(&inner.tx);
                TxBody {
                    source,
                    sequence: inner.tx.seq_num.0,
                    fee_source: Some(MuxedAccountId::from(&fb.tx.fee_source)),
                    max_fee: fb.tx.fee,
                    memo: &inner.tx.memo,
                    time_bounds,
                    operations: inner.tx.operations.as_slice(),
                    inner: Some(inner),
                }
            }
        }
    }
}

/// Whether a transaction succeeded, and its operation results when it got that far.
struct TxOutcome<'a> {
    successful: bool,
    op_results: Option<&'a [OperationResult]>,
    fee_charged: i64,
}

impl<'a> TxOutcome<'a> {
    fn of(pair: &'a TransactionResultPair) -> Self {
        use stellar_xdr::InnerTransactionResultResult as Inner;
        let fee_charged = pair.result.fee_charged;
        let (successful, op_results) = match &pair.result.result {
            TransactionResultResult::TxSuccess(r) => (true, Some(r.as_slice())),
            TransactionResultResult::TxFailed(r) => (false, Some(r.as_slice())),
            TransactionResultResult::TxFeeBumpInnerSuccess(inner)
            | TransactionResultResult::TxFeeBumpInnerFailed(inner) => match &inner.result.result {
                Inner::TxSuccess(r) => (true, Some(r.as_slice())),
                Inner::TxFailed(r) => (false, Some(r.as_slice())),
                _ => (false, None),
            },
            _ => (false, None),
        };
        // A fee bump whose outer result says the inner failed is a failure whatever the
        // inner list says.
        let successful = successful
            && !matches!(
                pair.result.result,
                TransactionResultResult::TxFeeBumpInnerFailed(_)
            );
        Self {
            successful,
            op_results,
            fee_charged,
        }
    }
}

fn transaction_context(
    tx: &TxInput<'_>,
    body: &TxBody<'_>,
    outcome: &TxOutcome<'_>,
    ledger: &LedgerInfo,
    network_id: [u8; 32],
) -> Result<TransactionContext, ExtractErrorKind> {
    let memo = match body.memo {
        stellar_xdr::Memo::None => Memo::None,
        stellar_xdr::Memo::Text(text) => Memo::Text(text.as_slice().to_vec()),
        stellar_xdr::Memo::Id(id) => Memo::Id(*id),
        stellar_xdr::Memo::Hash(hash) => Memo::Hash(hash.0),
        stellar_xdr::Memo::Return(hash) => Memo::Return(hash.0),
    };
    let inner_hash = match body.inner {
        Some(inner) => {
            Some(hashing::inner_hash(inner, &network_id).map_err(ExtractErrorKind::Hash)?)
        }
        None => None,
    };
    Ok(TransactionContext {
        hash: tx.pair.transaction_hash.0,
        inner_hash,
        id: Toid::new(ledger.sequence, tx.order, 0)?,
        successful: outcome.successful,
        source: body.source,
        source_sequence: body.sequence,
        fee_source: body.fee_source,
        fee_charged: outcome.fee_charged,
        max_fee: body.max_fee,
        operation_count: body.operations.len() as u32,
        memo,
        time_bounds: body.time_bounds.map(|tb| (tb.min_time.0, tb.max_time.0)),
        ledger_seq: ledger.sequence,
        closed_at: ledger.closed_at,
    })
}

/// A version-independent view of a ledger, fully decoded or scanned.
enum LedgerView<'a> {
    Full(&'a LedgerCloseMeta),
    Scanned(&'a scan::ScannedLedger),
}

impl<'a> LedgerView<'a> {
    fn header(&self) -> &'a LedgerHeaderHistoryEntry {
        match self {
            Self::Full(LedgerCloseMeta::V0(m)) => &m.ledger_header,
            Self::Full(LedgerCloseMeta::V1(m)) => &m.ledger_header,
            Self::Full(LedgerCloseMeta::V2(m)) => &m.ledger_header,
            Self::Scanned(s) => &s.header,
        }
    }

    fn info(&self) -> LedgerInfo {
        let entry = self.header();
        LedgerInfo {
            sequence: entry.header.ledger_seq,
            hash: entry.hash.0,
            previous_hash: entry.header.previous_ledger_hash.0,
            closed_at: i64::try_from(entry.header.scp_value.close_time.0).unwrap_or(i64::MAX),
            protocol_version: entry.header.ledger_version,
            meta_version: match self {
                Self::Full(LedgerCloseMeta::V0(_)) => 0,
                Self::Full(LedgerCloseMeta::V1(_)) => 1,
                Self::Full(LedgerCloseMeta::V2(_)) => 2,
                Self::Scanned(s) => s.meta_version,
            },
        }
    }

    fn envelopes(&self) -> Vec<&'a TransactionEnvelope> {
        match self {
            Self::Full(LedgerCloseMeta::V0(m)) => m.tx_set.txs.iter().collect(),
            Self::Full(LedgerCloseMeta::V1(m)) => generalized_envelopes(&m.tx_set),
            Self::Full(LedgerCloseMeta::V2(m)) => generalized_envelopes(&m.tx_set),
            Self::Scanned(s) => match &s.tx_set {
                scan::ScannedTxSet::Classic(set) => set.txs.iter().collect(),
                scan::ScannedTxSet::Generalized(set) => generalized_envelopes(set),
            },
        }
    }

    /// `tx_processing`, in application order.
    fn processing(&self) -> Vec<(&'a TransactionResultPair, EventsRef<'a>)> {
        match self {
            Self::Full(LedgerCloseMeta::V0(m)) => m
                .tx_processing
                .iter()
                .map(|p| (&p.result, EventsRef::Meta(&p.tx_apply_processing)))
                .collect(),
            Self::Full(LedgerCloseMeta::V1(m)) => m
                .tx_processing
                .iter()
                .map(|p| (&p.result, EventsRef::Meta(&p.tx_apply_processing)))
                .collect(),
            Self::Full(LedgerCloseMeta::V2(m)) => m
                .tx_processing
                .iter()
                .map(|p| (&p.result, EventsRef::Meta(&p.tx_apply_processing)))
                .collect(),
            Self::Scanned(s) => s
                .applied
                .iter()
                .map(|a| (&a.result, EventsRef::Scanned(&a.events)))
                .collect(),
        }
    }
}

fn generalized_envelopes(set: &GeneralizedTransactionSet) -> Vec<&TransactionEnvelope> {
    let GeneralizedTransactionSet::V1(v1) = set;
    let mut out = Vec::new();
    for phase in v1.phases.iter() {
        match phase {
            TransactionPhase::V0(components) => {
                for TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in components.iter() {
                    out.extend(c.txs.iter());
                }
            }
            TransactionPhase::V1(parallel) => {
                for stage in parallel.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter());
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_empty_input_is_a_decode_error() {
        for bytes in [&[][..], &[0, 0, 0], &[0, 0, 0, 9]] {
            let err = decode_ledger(bytes).expect_err("must fail");
            assert!(matches!(err.kind, ExtractErrorKind::Decode(_)), "{err}");
        }
    }
}
