//! Builds one synthetic transaction at a time: the envelope, its network hash, the result
//! pair and meta the network would have recorded for it, and, from the same decisions,
//! the payment records the indexer must extract from it.
//!
//! Every choice is made once, from the generator's random stream, and both the XDR and
//! the expected records are written from that choice: the records are never read back
//! out of the XDR, so the extractor is checked against an independent account of what
//! the chain holds.

use base64::Engine as _;
use shared::address::{AccountId, Address, MuxedAccountId};
use shared::payment::{
    AssetBalanceChange, BalanceChangeKind, HostFunction, Memo, PathPaymentStrictness, PaymentKind,
    TransactionContext,
};
use shared::toid::Toid;
use stellar_xdr::{
    AccountMergeResult, BumpSequenceOp, BumpSequenceResult, ClaimAtom, ClaimOfferAtom,
    ContractEvent, ContractEventBody, ContractEventType, ContractEventV0, ContractId,
    CreateAccountOp, CreateAccountResult, DataValue, DecoratedSignature, EnvelopeType,
    ExtensionPoint, FeeBumpTransaction, FeeBumpTransactionEnvelope, FeeBumpTransactionExt,
    FeeBumpTransactionInnerTx, Hash, InnerTransactionResult, InnerTransactionResultExt,
    InnerTransactionResultPair, InnerTransactionResultResult, Int128Parts, InvokeContractArgs,
    InvokeHostFunctionOp, InvokeHostFunctionResult, LedgerBounds, LedgerEntryChanges,
    LedgerFootprint, Limits, ManageDataOp, ManageDataResult, Operation, OperationBody,
    OperationMetaV2, OperationResult, OperationResultTr, PathPaymentStrictReceiveOp,
    PathPaymentStrictReceiveResult, PathPaymentStrictReceiveResultSuccess, PathPaymentStrictSendOp,
    PathPaymentStrictSendResult, PathPaymentStrictSendResultSuccess, PaymentOp, PaymentResult,
    Preconditions, PreconditionsV2, ScAddress, ScMap, ScMapEntry, ScSymbol, ScVal, SequenceNumber,
    Signature, SignatureHint, SimplePaymentResult, SorobanAuthorizationEntry,
    SorobanAuthorizedFunction, SorobanAuthorizedInvocation, SorobanCredentials, SorobanResources,
    SorobanTransactionData, SorobanTransactionDataExt, SorobanTransactionMetaExt,
    SorobanTransactionMetaV2, String64, TimeBounds, TimePoint, Transaction, TransactionEnvelope,
    TransactionEvent, TransactionEventStage, TransactionExt, TransactionMeta, TransactionMetaV4,
    TransactionResult, TransactionResultExt, TransactionResultMetaV1, TransactionResultPair,
    TransactionResultResult, TransactionV0, TransactionV0Envelope, TransactionV0Ext,
    TransactionV1Envelope, Uint256, VecM, WriteXdr,
};

use super::rng::Rng;
use super::world::{account_id, Holder, Party, World};

/// Base fee per operation, in stroops, as the header declares.
pub(crate) const BASE_FEE: i64 = 100;

/// One generated transaction, ready to be placed in a ledger.
#[derive(Debug)]
pub(crate) struct BuiltTx {
    /// The envelope, for the transaction set.
    pub(crate) envelope: TransactionEnvelope,
    /// Its network hash (the outer one for a fee bump).
    pub(crate) hash: [u8; 32],
    /// Whether it goes in the Soroban phase.
    pub(crate) soroban: bool,
    /// Its `tx_processing` entry.
    pub(crate) processing: TransactionResultMetaV1,
    /// The context its records carry; `id` is set when the ledger's order is known.
    pub(crate) context: TransactionContext,
    /// Its payment records: operation index (1-based), source, kind.
    pub(crate) records: Vec<(u32, MuxedAccountId, PaymentKind)>,
}

/// The ledger a transaction is built for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LedgerCtx {
    pub(crate) seq: u32,
    pub(crate) close_time: i64,
}

/// How a transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    /// `txFAILED`: one operation failed, every result is listed.
    OpFailed,
    /// `txBAD_SEQ`: charged a fee, no operation applied, no results.
    BadSeq,
}

/// One operation with everything that follows from it.
struct OpPlan {
    op: Operation,
    /// The result when it succeeds (also shown by the others of a failed transaction).
    ok: OperationResultTr,
    /// The result when it is the operation that failed.
    failed: OperationResultTr,
    /// Contract events it emits when the transaction succeeds.
    events: Vec<ContractEvent>,
    /// The record it makes (already reflecting the transaction's success).
    record: Option<(MuxedAccountId, PaymentKind)>,
}

/// Which classic payment operation.
#[derive(Clone, Copy, Debug)]
enum PayOp {
    Payment,
    CreateAccount,
    StrictReceive,
    StrictSend,
    Merge,
}

/// Which Soroban call.
#[derive(Clone, Copy, Debug)]
enum Call {
    Transfer,
    Mint,
    Burn,
    Clawback,
    Swap,
    Impostor,
}

/// Contract values used over and over, built once.
#[derive(Debug)]
struct Symbols {
    transfer: ScVal,
    mint: ScVal,
    burn: ScVal,
    clawback: ScVal,
    fee: ScVal,
    swap: ScVal,
    amount: ScVal,
    to_muxed_id: ScVal,
}

fn symbol(text: &str) -> ScVal {
    ScVal::Symbol(ScSymbol(text.parse().unwrap_or_default()))
}

fn function_name(text: &str) -> ScSymbol {
    ScSymbol(text.parse().unwrap_or_default())
}

/// A `VecM` from a vector the generator keeps within bounds by construction (a
/// violation is a bug here, and fails loudly rather than emptying the vector).
pub(crate) fn vecm<T, const MAX: u32>(items: Vec<T>) -> VecM<T, MAX> {
    items
        .try_into()
        .unwrap_or_else(|_| unreachable!("generated vectors stay within their XDR bounds"))
}

fn i128_val(amount: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: (amount >> 64) as i64,
        lo: amount as u64,
    })
}

/// Makes transactions; owns the world and the random stream.
#[derive(Debug)]
pub(crate) struct Factory {
    pub(crate) world: World,
    rng: Rng,
    network_id: [u8; 32],
    /// Counter of one-off accounts (created, merged away).
    fresh: u64,
    /// Counter of offer ids.
    offers: i64,
    symbols: Symbols,
    /// What a successful invocation's result hashes (its `void` return value).
    return_hash: Hash,
}

pub(crate) use shared::hashing::xdr_sha256;

/// The transaction signature payload hash (network id, envelope type, transaction).
fn payload_hash(network_id: &[u8; 32], kind: EnvelopeType, tx: &impl WriteXdr) -> [u8; 32] {
    // Transactions built here are within their XDR bounds, so encoding cannot fail.
    shared::hashing::signature_payload_hash(network_id, kind, tx).unwrap_or_default()
}

impl Factory {
    pub(crate) fn new(world: World, seed: u64, network_id: [u8; 32]) -> Self {
        Self {
            world,
            rng: Rng::new(seed),
            network_id,
            fresh: 0,
            offers: 0,
            symbols: Symbols {
                transfer: symbol("transfer"),
                mint: symbol("mint"),
                burn: symbol("burn"),
                clawback: symbol("clawback"),
                fee: symbol("fee"),
                swap: symbol("swap"),
                amount: symbol("amount"),
                to_muxed_id: symbol("to_muxed_id"),
            },
            return_hash: Hash(xdr_sha256(&ScVal::Void)),
        }
    }

    /// A transaction making at most `budget` (at least 1) payment records.
    pub(crate) fn transaction(&mut self, ledger: LedgerCtx, budget: u32) -> BuiltTx {
        let rng = &mut self.rng;
        let outcome = if rng.chance(0.10) {
            if rng.chance(0.12) {
                Outcome::BadSeq
            } else {
                Outcome::OpFailed
            }
        } else {
            Outcome::Success
        };
        let fee_bump = rng.chance(0.08);
        match rng.weighted(&[58, 14, 5, 23]) {
            0 => self.classic(ledger, outcome, fee_bump, 1, 0),
            1 => {
                let ops = self.rng.range(2, 5) as u32;
                let payments = (self.rng.range(1, i64::from(ops)) as u32).min(budget.max(1));
                self.classic(ledger, outcome, fee_bump, payments, ops - payments)
            }
            2 => {
                let others = self.rng.range(1, 3) as u32;
                self.classic(ledger, outcome, fee_bump, 0, others)
            }
            _ => self.soroban(ledger, outcome, fee_bump),
        }
    }

    // ---- parties and amounts ----

    fn account(&mut self, muxed: f64) -> Party {
        let index = self.world.popular(&mut self.rng);
        let key = self.world.key(index);
        self.maybe_muxed(key, muxed)
    }

    fn maybe_muxed(&mut self, key: [u8; 32], chance: f64) -> Party {
        let muxed_id = self.rng.chance(chance).then(|| {
            // Exchanges use small customer ids; some ids use all 64 bits.
            if self.rng.chance(0.8) {
                self.rng.below(1_000_000)
            } else {
                self.rng.next_u64()
            }
        });
        Party { key, muxed_id }
    }

    fn fresh_party(&mut self) -> Party {
        self.fresh += 1;
        Party::plain(self.world.fresh_key(self.fresh))
    }

    /// A positive amount in stroops, spread over many magnitudes.
    fn amount(&mut self) -> i64 {
        let mantissa = self.rng.range(1, 9_999);
        let magnitude = 10i64.pow(self.rng.range(0, 8) as u32);
        mantissa * magnitude
    }

    fn offer_id(&mut self) -> i64 {
        self.offers += 1;
        self.offers
    }

    // ---- events ----

    fn event(&self, contract: [u8; 32], topics: Vec<ScVal>, data: ScVal) -> ContractEvent {
        ContractEvent {
            ext: ExtensionPoint::V0,
            contract_id: Some(ContractId(Hash(contract))),
            type_: ContractEventType::Contract,
            body: ContractEventBody::V0(ContractEventV0 {
                topics: vecm(topics),
                data,
            }),
        }
    }

    /// An amount as event data: a bare i128, or (CAP-67, muxed destination) a map with
    /// the amount and the destination's muxed id.
    fn amount_data(&self, amount: i128, to_muxed_id: Option<u64>) -> ScVal {
        match to_muxed_id {
            None => i128_val(amount),
            Some(id) => ScVal::Map(Some(ScMap(vecm(vec![
                ScMapEntry {
                    key: self.symbols.amount.clone(),
                    val: i128_val(amount),
                },
                ScMapEntry {
                    key: self.symbols.to_muxed_id.clone(),
                    val: ScVal::U64(id),
                },
            ])))),
        }
    }

    /// A CAP-67 SAC balance event and the change the extractor reads from it.
    fn sac_event(
        &self,
        asset: usize,
        kind: BalanceChangeKind,
        from: Option<Holder>,
        to: Option<Holder>,
        amount: i64,
    ) -> (ContractEvent, AssetBalanceChange) {
        let info = &self.world.assets[asset];
        let symbol = match kind {
            BalanceChangeKind::Transfer => &self.symbols.transfer,
            BalanceChangeKind::Mint => &self.symbols.mint,
            BalanceChangeKind::Burn => &self.symbols.burn,
            BalanceChangeKind::Clawback => &self.symbols.clawback,
        };
        let mut topics = Vec::with_capacity(4);
        topics.push(symbol.clone());
        topics.extend(from.map(|h| h.topic()));
        topics.extend(to.map(|h| h.topic()));
        topics.push(info.topic.clone());
        let muxed = to.and_then(|h| h.muxed_id());
        let event = self.event(
            info.sac_id,
            topics,
            self.amount_data(i128::from(amount), muxed),
        );
        let change = AssetBalanceChange {
            kind,
            asset: info.asset,
            from: from.map(|h| h.base().address()),
            to: to.map(|h| h.address()),
            amount: i128::from(amount),
        };
        (event, change)
    }

    /// The event a classic movement emits (CAP-67): a payment from the issuer mints, one
    /// to the issuer burns, any other is a transfer.
    fn classic_event(&self, asset: usize, from: [u8; 32], to: Party, amount: i64) -> ContractEvent {
        let issuer = self.world.assets[asset].issuer.map(|i| self.world.key(i));
        let (from_key, to_key) = (from, to.key);
        let from = Holder::Account(Party::plain(from));
        let to = Holder::Account(to);
        let (event, _) = if issuer == Some(from_key) {
            self.sac_event(asset, BalanceChangeKind::Mint, None, Some(to), amount)
        } else if issuer == Some(to_key) {
            self.sac_event(asset, BalanceChangeKind::Burn, Some(from), None, amount)
        } else {
            self.sac_event(
                asset,
                BalanceChangeKind::Transfer,
                Some(from),
                Some(to),
                amount,
            )
        };
        event
    }

    // ---- classic operations ----

    fn payment_op(
        &mut self,
        kind: PayOp,
        op_source: Option<Party>,
        tx_source: Party,
        ok: bool,
    ) -> OpPlan {
        let source = op_source.unwrap_or(tx_source);
        match kind {
            PayOp::Payment => self.payment(op_source, source),
            PayOp::CreateAccount => self.create_account(op_source, source),
            PayOp::StrictReceive => self.path_payment(op_source, source, ok, true),
            PayOp::StrictSend => self.path_payment(op_source, source, ok, false),
            PayOp::Merge => self.merge(op_source, source, ok),
        }
    }

    fn payment(&mut self, op_source: Option<Party>, source: Party) -> OpPlan {
        let to = self.account(0.12);
        let asset = self.world.asset(&mut self.rng);
        let amount = self.amount();
        let info = &self.world.assets[asset];
        OpPlan {
            op: Operation {
                source_account: op_source.map(|p| p.muxed_account()),
                body: OperationBody::Payment(PaymentOp {
                    destination: to.muxed_account(),
                    asset: info.xdr.clone(),
                    amount,
                }),
            },
            ok: OperationResultTr::Payment(PaymentResult::Success),
            failed: OperationResultTr::Payment(PaymentResult::Underfunded),
            events: vec![self.classic_event(asset, source.key, to, amount)],
            record: Some((
                source.id(),
                PaymentKind::Payment {
                    to: to.id(),
                    asset: info.asset,
                    amount,
                },
            )),
        }
    }

    fn create_account(&mut self, op_source: Option<Party>, source: Party) -> OpPlan {
        let account = self.fresh_party();
        let starting_balance = self.rng.range(10_000_000, 100_000_000_000);
        OpPlan {
            op: Operation {
                source_account: op_source.map(|p| p.muxed_account()),
                body: OperationBody::CreateAccount(CreateAccountOp {
                    destination: account.account_id(),
                    starting_balance,
                }),
            },
            ok: OperationResultTr::CreateAccount(CreateAccountResult::Success),
            failed: OperationResultTr::CreateAccount(CreateAccountResult::Underfunded),
            events: vec![self.classic_event(0, source.key, account, starting_balance)],
            record: Some((
                source.id(),
                PaymentKind::CreateAccount {
                    account: AccountId(account.key),
                    starting_balance,
                },
            )),
        }
    }

    fn merge(&mut self, op_source: Option<Party>, source: Party, ok: bool) -> OpPlan {
        let into = self.account(0.12);
        let balance = self.rng.range(1, 50_000_000_000);
        OpPlan {
            op: Operation {
                source_account: op_source.map(|p| p.muxed_account()),
                body: OperationBody::AccountMerge(into.muxed_account()),
            },
            ok: OperationResultTr::AccountMerge(AccountMergeResult::Success(balance)),
            failed: OperationResultTr::AccountMerge(AccountMergeResult::HasSubEntries),
            events: vec![self.classic_event(0, source.key, into, balance)],
            record: Some((
                source.id(),
                PaymentKind::AccountMerge {
                    into: into.id(),
                    amount: ok.then_some(balance),
                },
            )),
        }
    }

    /// The assets a path payment goes through: source, intermediates, destination. Half
    /// of the same-asset picks stay a direct same-asset payment (no offers crossed).
    fn path_assets(&mut self) -> Vec<usize> {
        let n = self.world.assets.len();
        let source = self.world.asset(&mut self.rng);
        let mut dest = self.world.asset(&mut self.rng);
        if dest == source {
            if self.rng.chance(0.5) {
                return vec![source];
            }
            dest = (source + 1 + self.rng.index(n - 1)) % n;
        }
        let mut hops = vec![source];
        let intermediates = self.rng.weighted(&[60, 30, 10]);
        for _ in 0..intermediates {
            let candidate = self.rng.index(n);
            if candidate != dest && !hops.contains(&candidate) {
                hops.push(candidate);
            }
        }
        hops.push(dest);
        hops
    }

    /// An amount converted at a random price between 1/2 and 2.
    fn convert(&mut self, amount: i64) -> i64 {
        let num = self.rng.range(50, 200);
        let converted = i128::from(amount) * i128::from(num) / 100;
        i64::try_from(converted).unwrap_or(i64::MAX).max(1)
    }

    /// The offers crossed by one conversion, selling `sold` of `hops[k + 1]` in total and
    /// buying `bought` of `hops[k]`, split over one to three offers.
    fn offers(
        &mut self,
        out: &mut Vec<ClaimAtom>,
        bought_asset: usize,
        sold_asset: usize,
        sold: i64,
        bought: i64,
    ) {
        let mut parts = self.rng.range(1, 3);
        if sold < parts || bought < parts {
            parts = 1;
        }
        let (mut sold_left, mut bought_left) = (sold, bought);
        for i in 0..parts {
            let (s, b) = if i == parts - 1 {
                (sold_left, bought_left)
            } else {
                (sold / parts, bought / parts)
            };
            sold_left -= s;
            bought_left -= b;
            let seller = self.world.popular(&mut self.rng);
            let seller = account_id(self.world.key(seller));
            let offer_id = self.offer_id();
            out.push(ClaimAtom::OrderBook(ClaimOfferAtom {
                seller_id: seller,
                offer_id,
                asset_sold: self.world.assets[sold_asset].xdr.clone(),
                amount_sold: s,
                asset_bought: self.world.assets[bought_asset].xdr.clone(),
                amount_bought: b,
            }));
        }
    }

    fn path_payment(
        &mut self,
        op_source: Option<Party>,
        source: Party,
        ok: bool,
        strict_receive: bool,
    ) -> OpPlan {
        let to = self.account(0.12);
        let hops = self.path_assets();
        let (first, last) = (hops[0], hops[hops.len() - 1]);
        let conversions = hops.len() - 1;
        let mut offers = Vec::new();
        let assets = &self.world.assets;
        let (send_asset, dest_asset) = (assets[first].xdr.clone(), assets[last].xdr.clone());
        let intermediates = hops.get(1..hops.len().saturating_sub(1)).unwrap_or(&[]);
        let path_xdr: Vec<stellar_xdr::Asset> = intermediates
            .iter()
            .map(|i| assets[*i].xdr.clone())
            .collect();
        let path: Vec<shared::asset::Asset> =
            intermediates.iter().map(|i| assets[*i].asset).collect();
        let (source_asset, dest_asset_domain) = (assets[first].asset, assets[last].asset);
        let destination = AccountId(to.key);
        let last_result = |amount: i64| SimplePaymentResult {
            destination: account_id(destination.0),
            asset: dest_asset.clone(),
            amount,
        };
        let op_source_xdr = op_source.map(|p| p.muxed_account());
        if strict_receive {
            let dest_amount = self.amount();
            // Work backwards from the exact amount received.
            let mut amounts = vec![(0i64, 0i64); conversions];
            let mut out = dest_amount;
            for k in (0..conversions).rev() {
                let inn = self.convert(out);
                amounts[k] = (out, inn);
                out = inn;
            }
            let sent = out;
            for (k, (sold, bought)) in amounts.into_iter().enumerate() {
                self.offers(&mut offers, hops[k], hops[k + 1], sold, bought);
            }
            let send_max = sent + sent / 100 * self.rng.range(0, 10);
            OpPlan {
                op: Operation {
                    source_account: op_source_xdr,
                    body: OperationBody::PathPaymentStrictReceive(PathPaymentStrictReceiveOp {
                        send_asset,
                        send_max,
                        destination: to.muxed_account(),
                        dest_asset: dest_asset.clone(),
                        dest_amount,
                        path: vecm(path_xdr),
                    }),
                },
                ok: OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::Success(
                        PathPaymentStrictReceiveResultSuccess {
                            offers: vecm(offers),
                            last: last_result(dest_amount),
                        },
                    ),
                ),
                failed: OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::OverSendmax,
                ),
                events: Vec::new(),
                record: Some((
                    source.id(),
                    PaymentKind::PathPayment {
                        strict: PathPaymentStrictness::StrictReceive,
                        to: to.id(),
                        asset: dest_asset_domain,
                        amount: dest_amount,
                        source_asset,
                        source_amount: if ok { sent } else { 0 },
                        limit: send_max,
                        path,
                    },
                )),
            }
        } else {
            let send_amount = self.amount();
            let mut inn = send_amount;
            let mut amounts = Vec::with_capacity(conversions);
            for _ in 0..conversions {
                let out = self.convert(inn);
                amounts.push((out, inn));
                inn = out;
            }
            let delivered = inn;
            for (k, (sold, bought)) in amounts.into_iter().enumerate() {
                self.offers(&mut offers, hops[k], hops[k + 1], sold, bought);
            }
            let dest_min = (delivered - delivered / 100 * self.rng.range(0, 10)).max(1);
            OpPlan {
                op: Operation {
                    source_account: op_source_xdr,
                    body: OperationBody::PathPaymentStrictSend(PathPaymentStrictSendOp {
                        send_asset,
                        send_amount,
                        destination: to.muxed_account(),
                        dest_asset: dest_asset.clone(),
                        dest_min,
                        path: vecm(path_xdr),
                    }),
                },
                ok: OperationResultTr::PathPaymentStrictSend(PathPaymentStrictSendResult::Success(
                    PathPaymentStrictSendResultSuccess {
                        offers: vecm(offers),
                        last: last_result(delivered),
                    },
                )),
                failed: OperationResultTr::PathPaymentStrictSend(
                    PathPaymentStrictSendResult::UnderDestmin,
                ),
                events: Vec::new(),
                record: Some((
                    source.id(),
                    PaymentKind::PathPayment {
                        strict: PathPaymentStrictness::StrictSend,
                        to: to.id(),
                        asset: dest_asset_domain,
                        amount: if ok { delivered } else { 0 },
                        source_asset,
                        source_amount: send_amount,
                        limit: dest_min,
                        path,
                    },
                )),
            }
        }
    }

    /// A non-payment operation: manage data or bump sequence.
    fn other_op(&mut self, op_source: Option<Party>, ledger: LedgerCtx) -> OpPlan {
        let source_account = op_source.map(|p| p.muxed_account());
        if self.rng.chance(0.6) {
            let name = format!("synth.{}", self.rng.below(1000));
            let value = self.rng.chance(0.85).then(|| {
                let bytes = self.rng.next_u64().to_be_bytes().to_vec();
                DataValue(bytes.try_into().unwrap_or_default())
            });
            OpPlan {
                op: Operation {
                    source_account,
                    body: OperationBody::ManageData(ManageDataOp {
                        data_name: String64(name.parse().unwrap_or_default()),
                        data_value: value,
                    }),
                },
                ok: OperationResultTr::ManageData(ManageDataResult::Success),
                failed: OperationResultTr::ManageData(ManageDataResult::NameNotFound),
                events: Vec::new(),
                record: None,
            }
        } else {
            let bump_to = (i64::from(ledger.seq) << 32) + self.rng.range(1, 1 << 20);
            OpPlan {
                op: Operation {
                    source_account,
                    body: OperationBody::BumpSequence(BumpSequenceOp {
                        bump_to: SequenceNumber(bump_to),
                    }),
                },
                ok: OperationResultTr::BumpSequence(BumpSequenceResult::Success),
                failed: OperationResultTr::BumpSequence(BumpSequenceResult::BadSeq),
                events: Vec::new(),
                record: None,
            }
        }
    }

    fn pay_op_kind(&mut self, multi: bool) -> PayOp {
        let weights: &[u32] = if multi {
            &[70, 10, 8, 8, 4]
        } else {
            &[62, 8, 11, 11, 4]
        };
        match self.rng.weighted(weights) {
            0 => PayOp::Payment,
            1 => PayOp::CreateAccount,
            2 => PayOp::StrictReceive,
            3 => PayOp::StrictSend,
            _ => PayOp::Merge,
        }
    }

    /// A classic transaction with `payments` payment operations and `others` others.
    fn classic(
        &mut self,
        ledger: LedgerCtx,
        outcome: Outcome,
        fee_bump: bool,
        payments: u32,
        others: u32,
    ) -> BuiltTx {
        let ok = outcome == Outcome::Success;
        let v0 = !fee_bump && self.rng.chance(0.03);
        let mut kinds: Vec<Option<PayOp>> = (0..payments)
            .map(|_| Some(self.pay_op_kind(payments + others > 1)))
            .chain((0..others).map(|_| None))
            .collect();
        for i in (1..kinds.len()).rev() {
            let j = self.rng.index(i + 1);
            kinds.swap(i, j);
        }
        // A merge retires its source, so it always comes from a one-off account: the
        // operation's own source, or for a lone merge often the transaction's.
        let lone_merge = kinds.len() == 1 && matches!(kinds[0], Some(PayOp::Merge));
        let source_is_merged = lone_merge && self.rng.chance(0.5);
        let source = if source_is_merged {
            self.fresh_party()
        } else if v0 {
            self.account(0.0)
        } else {
            self.account(0.10)
        };
        let multi = kinds.len() > 1;
        let mut plans = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let op_source = match kind {
                Some(PayOp::Merge) if source_is_merged => None,
                Some(PayOp::Merge) => Some(self.fresh_party()),
                _ if self.rng.chance(if multi { 0.3 } else { 0.1 }) => Some(self.account(0.15)),
                _ => None,
            };
            plans.push(match kind {
                Some(kind) => self.payment_op(kind, op_source, source, ok),
                None => self.other_op(op_source, ledger),
            });
        }
        self.finish(ledger, source, plans, outcome, fee_bump, v0, None)
    }

    // ---- Soroban ----

    fn soroban(&mut self, ledger: LedgerCtx, outcome: Outcome, fee_bump: bool) -> BuiltTx {
        let ok = outcome == Outcome::Success;
        let call = match self.rng.weighted(&[55, 8, 6, 3, 12, 8]) {
            0 => Call::Transfer,
            1 => Call::Mint,
            2 => Call::Burn,
            3 => Call::Clawback,
            4 => Call::Swap,
            _ => Call::Impostor,
        };
        let amount = self.amount();
        let (source, contract, function, args, events, changes) = match call {
            Call::Transfer | Call::Impostor => {
                let source = self.account(0.10);
                let asset = self.world.asset(&mut self.rng);
                let from = Holder::Account(Party::plain(source.key));
                let to = if self.rng.chance(0.1) {
                    Holder::Contract(self.world.router)
                } else {
                    Holder::Account(self.account(0.15))
                };
                let args = vec![from.argument(), to.argument(), i128_val(i128::from(amount))];
                let (event, change) = self.sac_event(
                    asset,
                    BalanceChangeKind::Transfer,
                    Some(from),
                    Some(to),
                    amount,
                );
                if matches!(call, Call::Impostor) {
                    // Same topics and data, emitted by a contract that is not the
                    // asset's SAC: not a payment.
                    let ContractEventBody::V0(body) = event.body;
                    let fake = self.event(self.world.impostor, body.topics.into_vec(), body.data);
                    (
                        source,
                        self.world.impostor,
                        "transfer",
                        args,
                        vec![fake],
                        vec![],
                    )
                } else {
                    let sac = self.world.assets[asset].sac_id;
                    (source, sac, "transfer", args, vec![event], vec![change])
                }
            }
            Call::Mint | Call::Clawback => {
                let asset = self.world.credit_asset(&mut self.rng);
                let issuer = self.world.assets[asset].issuer.unwrap_or(0);
                let issuer = self.world.key(issuer);
                let source = self.maybe_muxed(issuer, 0.05);
                let sac = self.world.assets[asset].sac_id;
                if matches!(call, Call::Mint) {
                    let to = Holder::Account(self.account(0.15));
                    let args = vec![to.argument(), i128_val(i128::from(amount))];
                    let (event, change) =
                        self.sac_event(asset, BalanceChangeKind::Mint, None, Some(to), amount);
                    (source, sac, "mint", args, vec![event], vec![change])
                } else {
                    let from = Holder::Account(self.account(0.0));
                    let args = vec![from.argument(), i128_val(i128::from(amount))];
                    let (event, change) = self.sac_event(
                        asset,
                        BalanceChangeKind::Clawback,
                        Some(from),
                        None,
                        amount,
                    );
                    (source, sac, "clawback", args, vec![event], vec![change])
                }
            }
            Call::Burn => {
                let asset = self.world.credit_asset(&mut self.rng);
                let source = self.account(0.10);
                let from = Holder::Account(Party::plain(source.key));
                let args = vec![from.argument(), i128_val(i128::from(amount))];
                let (event, change) =
                    self.sac_event(asset, BalanceChangeKind::Burn, Some(from), None, amount);
                let sac = self.world.assets[asset].sac_id;
                (source, sac, "burn", args, vec![event], vec![change])
            }
            Call::Swap => {
                let source = self.account(0.10);
                let user = Holder::Account(Party::plain(source.key));
                let pool = Holder::Contract(self.world.router);
                let sold = self.world.asset(&mut self.rng);
                let n = self.world.assets.len();
                let bought = (sold + 1 + self.rng.index(n - 1)) % n;
                let received = self.convert(amount);
                let min_out = received - received / 100;
                let sac = |i: usize| {
                    ScVal::Address(ScAddress::Contract(ContractId(Hash(
                        self.world.assets[i].sac_id,
                    ))))
                };
                let args = vec![
                    user.argument(),
                    sac(sold),
                    sac(bought),
                    i128_val(i128::from(amount)),
                    i128_val(i128::from(min_out)),
                ];
                let (event_in, change_in) = self.sac_event(
                    sold,
                    BalanceChangeKind::Transfer,
                    Some(user),
                    Some(pool),
                    amount,
                );
                let (event_out, change_out) = self.sac_event(
                    bought,
                    BalanceChangeKind::Transfer,
                    Some(pool),
                    Some(user),
                    received,
                );
                // The router's own event: not a balance event, ignored by the indexer.
                let own = self.event(
                    self.world.router,
                    vec![self.symbols.swap.clone(), user.topic()],
                    i128_val(i128::from(received)),
                );
                (
                    source,
                    self.world.router,
                    "swap",
                    args,
                    vec![event_in, own, event_out],
                    vec![change_in, change_out],
                )
            }
        };
        let record = (ok && !changes.is_empty()).then(|| {
            (
                source.id(),
                PaymentKind::InvokeHostFunction {
                    function: HostFunction::InvokeContract {
                        contract: Address::Contract(contract),
                        function: function.to_owned(),
                        args: args.iter().map(parameter).collect(),
                    },
                    balance_changes: changes,
                },
            )
        });
        let invoke = InvokeContractArgs {
            contract_address: ScAddress::Contract(ContractId(Hash(contract))),
            function_name: function_name(function),
            args: vecm(args),
        };
        let auth = SorobanAuthorizationEntry {
            credentials: SorobanCredentials::SourceAccount,
            root_invocation: SorobanAuthorizedInvocation {
                function: SorobanAuthorizedFunction::ContractFn(invoke.clone()),
                sub_invocations: VecM::default(),
            },
        };
        let plan = OpPlan {
            op: Operation {
                source_account: None,
                body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
                    host_function: stellar_xdr::HostFunction::InvokeContract(invoke),
                    auth: vecm(vec![auth]),
                }),
            },
            ok: OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(
                self.return_hash.clone(),
            )),
            failed: OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Trapped),
            events,
            record,
        };
        let resources = SorobanTransactionData {
            ext: SorobanTransactionDataExt::V0,
            resources: SorobanResources {
                footprint: LedgerFootprint {
                    read_only: VecM::default(),
                    read_write: VecM::default(),
                },
                instructions: self.rng.range(1_000_000, 20_000_000) as u32,
                disk_read_bytes: self.rng.range(0, 10_000) as u32,
                write_bytes: self.rng.range(200, 2_000) as u32,
            },
            resource_fee: self.rng.range(20_000, 400_000),
        };
        self.finish(
            ledger,
            source,
            vec![plan],
            outcome,
            fee_bump,
            false,
            Some(resources),
        )
    }

    // ---- the transaction around the operations ----

    fn memo(&mut self) -> (stellar_xdr::Memo, Memo) {
        match self.rng.weighted(&[45, 15, 4, 22, 8, 6]) {
            0 => (stellar_xdr::Memo::None, Memo::None),
            1 => {
                let text = format!("synth payment {}", self.rng.below(1_000_000_000)).into_bytes();
                (
                    stellar_xdr::Memo::Text(text.clone().try_into().unwrap_or_default()),
                    Memo::Text(text),
                )
            }
            2 => {
                // Not UTF-8: memos are bytes, and the raw bytes must survive.
                let mut text = vec![0xF0, 0x28, 0x8C, 0xBC, 0xFF, b' '];
                text.extend_from_slice(&self.rng.next_u64().to_le_bytes());
                (
                    stellar_xdr::Memo::Text(text.clone().try_into().unwrap_or_default()),
                    Memo::Text(text),
                )
            }
            3 => {
                let id = self.rng.below(10_000_000_000);
                (stellar_xdr::Memo::Id(id), Memo::Id(id))
            }
            4 => {
                let hash = self.rng.bytes32();
                (stellar_xdr::Memo::Hash(Hash(hash)), Memo::Hash(hash))
            }
            _ => {
                let hash = self.rng.bytes32();
                (stellar_xdr::Memo::Return(Hash(hash)), Memo::Return(hash))
            }
        }
    }

    /// Preconditions and the time bounds they hold; a V0 transaction can only have
    /// optional time bounds.
    fn preconditions(
        &mut self,
        ledger: LedgerCtx,
        v0: bool,
    ) -> (Preconditions, Option<(u64, u64)>) {
        let close = u64::try_from(ledger.close_time).unwrap_or(0);
        let choice = self
            .rng
            .weighted(if v0 { &[30, 70, 0] } else { &[25, 55, 20] });
        match choice {
            0 => (Preconditions::None, None),
            1 => {
                let tb = self.time_bounds(close);
                let pair = (tb.min_time.0, tb.max_time.0);
                (Preconditions::Time(tb), Some(pair))
            }
            _ => {
                let tb = self.rng.chance(0.8).then(|| self.time_bounds(close));
                let pair = tb.as_ref().map(|tb| (tb.min_time.0, tb.max_time.0));
                let ledger_bounds = self.rng.chance(0.5).then(|| LedgerBounds {
                    min_ledger: 0,
                    max_ledger: ledger.seq + 10,
                });
                (
                    Preconditions::V2(PreconditionsV2 {
                        time_bounds: tb,
                        ledger_bounds,
                        min_seq_num: None,
                        min_seq_age: stellar_xdr::Duration(0),
                        min_seq_ledger_gap: 0,
                        extra_signers: VecM::default(),
                    }),
                    pair,
                )
            }
        }
    }

    /// Time bounds around a close time; 0 is "unbounded" on either side.
    fn time_bounds(&mut self, close: u64) -> TimeBounds {
        let min = if self.rng.chance(0.7) {
            0
        } else {
            close.saturating_sub(600)
        };
        let max = if self.rng.chance(0.1) {
            0
        } else {
            close + self.rng.below(600) + 1
        };
        TimeBounds {
            min_time: TimePoint(min),
            max_time: TimePoint(max),
        }
    }

    fn signature(&mut self, key: &[u8; 32]) -> DecoratedSignature {
        let mut bytes = Vec::with_capacity(64);
        for _ in 0..8 {
            bytes.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        DecoratedSignature {
            hint: SignatureHint([key[28], key[29], key[30], key[31]]),
            signature: Signature(bytes.try_into().unwrap_or_default()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        ledger: LedgerCtx,
        source: Party,
        plans: Vec<OpPlan>,
        outcome: Outcome,
        fee_bump: bool,
        v0: bool,
        soroban: Option<SorobanTransactionData>,
    ) -> BuiltTx {
        let ok = outcome == Outcome::Success;
        let n_ops = plans.len();
        let failing = (outcome == Outcome::OpFailed).then(|| self.rng.index(n_ops));
        let mut operations = Vec::with_capacity(n_ops);
        let mut results = Vec::with_capacity(n_ops);
        let mut metas = Vec::with_capacity(n_ops);
        let mut records = Vec::new();
        for (i, plan) in plans.into_iter().enumerate() {
            operations.push(plan.op);
            results.push(OperationResult::OpInner(if failing == Some(i) {
                plan.failed
            } else {
                plan.ok
            }));
            metas.push(OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: LedgerEntryChanges::default(),
                events: if ok {
                    vecm(plan.events)
                } else {
                    VecM::default()
                },
            });
            if let Some((op_source, kind)) = plan.record {
                records.push((i as u32 + 1, op_source, kind));
            }
        }

        let (memo_xdr, memo) = self.memo();
        let (cond, time_bounds) = self.preconditions(ledger, v0);
        // Sequence numbers start at (creation ledger << 32); nobody checks them here.
        let seq_num = (self.rng.range(1, i64::from(ledger.seq)) << 32) + self.rng.range(1, 1 << 24);
        let ops = n_ops as i64;
        let is_soroban = soroban.is_some();
        // Fees: classic pays the base fee per operation; Soroban adds its resource fee.
        let (fee, charged) = match &soroban {
            Some(data) => {
                let bid = self.rng.range(BASE_FEE, 10 * BASE_FEE);
                let used = data.resource_fee * self.rng.range(60, 100) / 100;
                (data.resource_fee + bid, BASE_FEE + used)
            }
            None => {
                let bid = [100, 100, 100, 200, 500, 1_000, 10_000][self.rng.index(7)];
                (bid * ops, BASE_FEE * ops)
            }
        };
        let ext = match soroban {
            Some(data) => TransactionExt::V1(data),
            None => TransactionExt::V0,
        };
        let fee_payer = if fee_bump { self.account(0.05) } else { source };
        let signature = self.signature(&source.key);
        let operations = vecm(operations);

        let (envelope, hash, inner_hash, max_fee, fee_charged) = if v0 {
            let time_bounds = match cond {
                Preconditions::Time(tb) => Some(tb),
                _ => None,
            };
            let tx = TransactionV0 {
                source_account_ed25519: Uint256(source.key),
                fee: u32::try_from(fee).unwrap_or(u32::MAX),
                seq_num: SequenceNumber(seq_num),
                time_bounds,
                memo: memo_xdr,
                operations,
                ext: TransactionV0Ext::V0,
            };
            let envelope = TransactionEnvelope::TxV0(TransactionV0Envelope {
                tx,
                signatures: vecm(vec![signature]),
            });
            // Rare: hash through stellar-xdr's own V0-to-V1 conversion.
            let hash = envelope.hash(self.network_id).unwrap_or_default();
            (envelope, hash, None, fee, charged)
        } else {
            let tx = Transaction {
                source_account: source.muxed_account(),
                fee: u32::try_from(fee).unwrap_or(u32::MAX),
                seq_num: SequenceNumber(seq_num),
                cond,
                memo: memo_xdr,
                operations,
                ext,
            };
            let tx_hash = payload_hash(&self.network_id, EnvelopeType::Tx, &tx);
            let inner = TransactionV1Envelope {
                tx,
                signatures: vecm(vec![signature]),
            };
            if fee_bump {
                let outer_fee = fee + BASE_FEE * self.rng.range(1, 20);
                let outer_charged = charged + BASE_FEE;
                let bump = FeeBumpTransaction {
                    fee_source: fee_payer.muxed_account(),
                    fee: outer_fee,
                    inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
                    ext: FeeBumpTransactionExt::V0,
                };
                let hash = payload_hash(&self.network_id, EnvelopeType::TxFeeBump, &bump);
                let signature = self.signature(&fee_payer.key);
                let envelope = TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
                    tx: bump,
                    signatures: vecm(vec![signature]),
                });
                (envelope, hash, Some(tx_hash), outer_fee, outer_charged)
            } else {
                (TransactionEnvelope::Tx(inner), tx_hash, None, fee, charged)
            }
        };

        let result = match (inner_hash, outcome) {
            (None, Outcome::Success) => TransactionResultResult::TxSuccess(vecm(results)),
            (None, Outcome::OpFailed) => TransactionResultResult::TxFailed(vecm(results)),
            (None, Outcome::BadSeq) => TransactionResultResult::TxBadSeq,
            (Some(inner), _) => {
                let inner_result = match outcome {
                    Outcome::Success => InnerTransactionResultResult::TxSuccess(vecm(results)),
                    Outcome::OpFailed => InnerTransactionResultResult::TxFailed(vecm(results)),
                    Outcome::BadSeq => InnerTransactionResultResult::TxBadSeq,
                };
                let pair = InnerTransactionResultPair {
                    transaction_hash: Hash(inner),
                    result: InnerTransactionResult {
                        fee_charged: charged,
                        result: inner_result,
                        ext: InnerTransactionResultExt::V0,
                    },
                };
                if ok {
                    TransactionResultResult::TxFeeBumpInnerSuccess(pair)
                } else {
                    TransactionResultResult::TxFeeBumpInnerFailed(pair)
                }
            }
        };
        let fee_event = TransactionEvent {
            stage: TransactionEventStage::BeforeAllTxs,
            event: self.event(
                self.world.native_sac(),
                vec![
                    self.symbols.fee.clone(),
                    Holder::Account(Party::plain(fee_payer.key)).topic(),
                ],
                i128_val(i128::from(fee_charged)),
            ),
        };
        let meta = TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: LedgerEntryChanges::default(),
            operations: vecm(metas),
            tx_changes_after: LedgerEntryChanges::default(),
            soroban_meta: (is_soroban && ok).then_some(SorobanTransactionMetaV2 {
                ext: SorobanTransactionMetaExt::V0,
                return_value: Some(ScVal::Void),
            }),
            events: vecm(vec![fee_event]),
            diagnostic_events: VecM::default(),
        };
        let processing = TransactionResultMetaV1 {
            ext: ExtensionPoint::V0,
            result: TransactionResultPair {
                transaction_hash: Hash(hash),
                result: TransactionResult {
                    fee_charged,
                    result,
                    ext: TransactionResultExt::V0,
                },
            },
            fee_processing: LedgerEntryChanges::default(),
            tx_apply_processing: TransactionMeta::V4(meta),
            post_tx_apply_fee_processing: LedgerEntryChanges::default(),
        };
        let context = TransactionContext {
            hash,
            inner_hash,
            id: Toid {
                ledger_seq: ledger.seq,
                tx_order: 0,
                op_index: 0,
            },
            successful: ok,
            source: source.id(),
            source_sequence: seq_num,
            fee_source: fee_bump.then(|| fee_payer.id()),
            fee_charged,
            max_fee,
            operation_count: n_ops as u32,
            memo,
            time_bounds,
            ledger_seq: ledger.seq,
            closed_at: ledger.close_time,
        };
        BuiltTx {
            envelope,
            hash,
            soroban: is_soroban,
            processing,
            context,
            records,
        }
    }
}

/// A contract argument as the indexer (and Horizon) shows it: the value's XDR arm name
/// and its base64 XDR. Written out for the arms the generator uses.
fn parameter(value: &ScVal) -> (String, String) {
    let name = match value {
        ScVal::Address(_) => "Address",
        ScVal::I128(_) => "I128",
        ScVal::U64(_) => "U64",
        ScVal::Symbol(_) => "Sym",
        ScVal::String(_) => "Str",
        ScVal::Void => "",
        _ => "other",
    };
    let xdr = value.to_xdr(Limits::none()).unwrap_or_default();
    (
        name.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(xdr),
    )
}
