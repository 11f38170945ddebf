//! The payment records this system indexes, with the transaction and ledger context each
//! one carries. These are the domain types: the extractor produces them, the writer
//! stores them, the reader renders them.

use std::sync::Arc;

use crate::address::{AccountId, Address, MuxedAccountId};
use crate::asset::Asset;
use crate::toid::Toid;

/// A transaction memo.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Memo {
    /// No memo.
    None,
    /// A text memo: up to 28 bytes, which need not be UTF-8; the raw bytes are kept.
    Text(Vec<u8>),
    /// A 64-bit id.
    Id(u64),
    /// A 32-byte hash.
    Hash([u8; 32]),
    /// A 32-byte return hash.
    Return([u8; 32]),
}

impl Memo {
    /// Horizon's `memo_type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Text(_) => "text",
            Self::Id(_) => "id",
            Self::Hash(_) => "hash",
            Self::Return(_) => "return",
        }
    }
}

/// What every payment record knows of its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionContext {
    /// The hash in the result pair (for a fee bump, the outer transaction's hash).
    pub hash: [u8; 32],
    /// For a fee bump, the inner transaction's hash.
    pub inner_hash: Option<[u8; 32]>,
    /// The transaction's TOID (operation index 0).
    pub id: Toid,
    /// Whether the transaction succeeded.
    pub successful: bool,
    /// The (inner) transaction's source account.
    pub source: MuxedAccountId,
    /// The source account's sequence number this transaction consumed.
    pub source_sequence: i64,
    /// For a fee bump, the account that paid the fee.
    pub fee_source: Option<MuxedAccountId>,
    /// The fee the network charged, in stroops.
    pub fee_charged: i64,
    /// The most the submitter offered to pay, in stroops (the outer bid for a fee bump).
    pub max_fee: i64,
    /// Operations in the (inner) transaction.
    pub operation_count: u32,
    /// The memo.
    pub memo: Memo,
    /// Lower and upper time bounds, when set (seconds since the epoch; 0 = unbounded).
    pub time_bounds: Option<(u64, u64)>,
    /// The ledger it was applied in.
    pub ledger_seq: u32,
    /// That ledger's close time, seconds since the epoch.
    pub closed_at: i64,
}

/// One movement of an asset reported by a Stellar Asset Contract event (CAP-67), as
/// Horizon's `asset_balance_changes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetBalanceChange {
    /// transfer, mint, burn or clawback.
    pub kind: BalanceChangeKind,
    /// The asset the contract wraps.
    pub asset: Asset,
    /// Who gave (absent for a mint).
    pub from: Option<Address>,
    /// Who received (absent for a burn or a clawback).
    pub to: Option<Address>,
    /// Amount in stroops (contract amounts are 128-bit).
    pub amount: i128,
}

/// The four Stellar Asset Contract events that move balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BalanceChangeKind {
    /// `transfer`
    Transfer,
    /// `mint`
    Mint,
    /// `burn`
    Burn,
    /// `clawback`
    Clawback,
}

impl BalanceChangeKind {
    /// The event's topic symbol, also Horizon's `type` for the change.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Mint => "mint",
            Self::Burn => "burn",
            Self::Clawback => "clawback",
        }
    }

    /// Reads a topic symbol.
    pub fn from_symbol(symbol: &[u8]) -> Option<Self> {
        Some(match symbol {
            b"transfer" => Self::Transfer,
            b"mint" => Self::Mint,
            b"burn" => Self::Burn,
            b"clawback" => Self::Clawback,
            _ => return None,
        })
    }
}

/// What kind of host function an `invoke_host_function` operation called, as Horizon
/// describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostFunction {
    /// A contract call.
    InvokeContract {
        /// The contract called.
        contract: Address,
        /// The function name.
        function: String,
        /// The arguments, each as (XDR type name, base64 XDR).
        args: Vec<(String, String)>,
    },
    /// Contract creation (v1 or v2).
    CreateContract {
        /// The deploying address, when created from an address.
        deployer: Option<Address>,
        /// The salt, when created from an address (decimal of the 256-bit salt).
        salt: Option<[u8; 32]>,
        /// The wrapped asset, when a Stellar Asset Contract is deployed.
        asset: Option<Asset>,
    },
    /// Wasm upload.
    UploadWasm,
}

impl HostFunction {
    /// Horizon's `function` field.
    pub fn horizon_name(&self) -> &'static str {
        match self {
            Self::InvokeContract { .. } => "HostFunctionTypeHostFunctionTypeInvokeContract",
            Self::CreateContract { .. } => "HostFunctionTypeHostFunctionTypeCreateContract",
            Self::UploadWasm => "HostFunctionTypeHostFunctionTypeUploadContractWasm",
        }
    }
}

/// The type-specific part of a payment record. Amounts are stroops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentKind {
    /// `create_account`: the funder is the operation's source.
    CreateAccount {
        /// The new account.
        account: AccountId,
        /// Its starting balance.
        starting_balance: i64,
    },
    /// `payment`.
    Payment {
        /// Destination.
        to: MuxedAccountId,
        /// Asset sent.
        asset: Asset,
        /// Amount sent and received.
        amount: i64,
    },
    /// `path_payment_strict_receive` and `path_payment_strict_send`.
    PathPayment {
        /// Which of the two.
        strict: PathPaymentStrictness,
        /// Destination.
        to: MuxedAccountId,
        /// Asset received.
        asset: Asset,
        /// Amount received: the operation's exact amount (strict receive) or, when
        /// successful, what the result says arrived (strict send; 0 when failed).
        amount: i64,
        /// Asset sent.
        source_asset: Asset,
        /// Amount sent: the exact amount (strict send) or, when successful, what the result
        /// says was spent (strict receive; 0 when failed).
        source_amount: i64,
        /// `send_max` (strict receive) or `dest_min` (strict send).
        limit: i64,
        /// Intermediate assets.
        path: Vec<Asset>,
    },
    /// `account_merge`: the operation's source is merged into `into`.
    AccountMerge {
        /// The receiving account.
        into: MuxedAccountId,
        /// The balance moved, from the result (absent when the operation failed).
        amount: Option<i64>,
    },
    /// `invoke_host_function` carrying Stellar Asset Contract balance movements.
    InvokeHostFunction {
        /// What was invoked.
        function: HostFunction,
        /// The movements, in event order.
        balance_changes: Vec<AssetBalanceChange>,
    },
}

/// The two path payment flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathPaymentStrictness {
    /// The destination amount is exact.
    StrictReceive,
    /// The source amount is exact.
    StrictSend,
}

/// Horizon's operation type names and numbers for the payment kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentType {
    /// 0
    CreateAccount,
    /// 1
    Payment,
    /// 2
    PathPaymentStrictReceive,
    /// 8
    AccountMerge,
    /// 13
    PathPaymentStrictSend,
    /// 24
    InvokeHostFunction,
}

impl PaymentType {
    /// Every payment type, in `type_i` order.
    pub const ALL: [Self; 6] = [
        Self::CreateAccount,
        Self::Payment,
        Self::PathPaymentStrictReceive,
        Self::AccountMerge,
        Self::PathPaymentStrictSend,
        Self::InvokeHostFunction,
    ];

    /// Horizon's `type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CreateAccount => "create_account",
            Self::Payment => "payment",
            Self::PathPaymentStrictReceive => "path_payment_strict_receive",
            Self::AccountMerge => "account_merge",
            Self::PathPaymentStrictSend => "path_payment_strict_send",
            Self::InvokeHostFunction => "invoke_host_function",
        }
    }

    /// Horizon's `type_i` (the XDR operation type number).
    pub fn type_i(&self) -> i16 {
        match self {
            Self::CreateAccount => 0,
            Self::Payment => 1,
            Self::PathPaymentStrictReceive => 2,
            Self::AccountMerge => 8,
            Self::PathPaymentStrictSend => 13,
            Self::InvokeHostFunction => 24,
        }
    }

    /// Reads a `type_i`.
    pub fn from_type_i(type_i: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_i() == type_i)
    }

    /// Reads a `type` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// What a payment record carries of its transaction. Extraction carries the whole
/// transaction; a reader's page that does not embed transactions carries only what a
/// payment resource shows of it ([`TransactionSummary`]), read from the payment's own
/// row without a probe of the transactions table.
pub trait TransactionFacts {
    /// The transaction's hash (for a fee bump, the outer transaction's).
    fn hash(&self) -> &[u8; 32];
    /// Whether the transaction succeeded.
    fn successful(&self) -> bool;
    /// Its ledger's close time, seconds since the epoch.
    fn closed_at(&self) -> i64;
    /// The whole transaction, when it is carried.
    fn context(&self) -> Option<&TransactionContext>;
}

impl TransactionFacts for Arc<TransactionContext> {
    fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    fn successful(&self) -> bool {
        self.successful
    }

    fn closed_at(&self) -> i64 {
        self.closed_at
    }

    fn context(&self) -> Option<&TransactionContext> {
        Some(self)
    }
}

/// What a payment resource shows of its transaction when it does not embed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionSummary {
    /// The transaction's hash (for a fee bump, the outer transaction's).
    pub hash: [u8; 32],
    /// Whether the transaction succeeded.
    pub successful: bool,
    /// Its ledger's close time, seconds since the epoch.
    pub closed_at: i64,
}

/// A transaction as a stored record is read back: whole, when the transaction is to be
/// embedded, or only its summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionRef {
    /// The whole transaction.
    Whole(Arc<TransactionContext>),
    /// Only what a payment resource shows of it.
    Summary(TransactionSummary),
}

impl TransactionFacts for TransactionRef {
    fn hash(&self) -> &[u8; 32] {
        match self {
            Self::Whole(tx) => &tx.hash,
            Self::Summary(s) => &s.hash,
        }
    }

    fn successful(&self) -> bool {
        match self {
            Self::Whole(tx) => tx.successful,
            Self::Summary(s) => s.successful,
        }
    }

    fn closed_at(&self) -> i64 {
        match self {
            Self::Whole(tx) => tx.closed_at,
            Self::Summary(s) => s.closed_at,
        }
    }

    fn context(&self) -> Option<&TransactionContext> {
        match self {
            Self::Whole(tx) => Some(tx),
            Self::Summary(_) => None,
        }
    }
}

/// One payment-type operation, with its transaction whole (`T` is
/// `Arc<TransactionContext>`, as extraction produces it) or as a [`TransactionRef`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord<T = Arc<TransactionContext>> {
    /// The operation's TOID: the record id and paging token.
    pub id: Toid,
    /// The operation's source (the transaction's source when the operation names none).
    pub source: MuxedAccountId,
    /// What the operation did.
    pub kind: PaymentKind,
    /// The transaction it belongs to.
    pub transaction: T,
}

impl<T: TransactionFacts> PaymentRecord<T> {
    /// Horizon's type of this record.
    pub fn payment_type(&self) -> PaymentType {
        match &self.kind {
            PaymentKind::CreateAccount { .. } => PaymentType::CreateAccount,
            PaymentKind::Payment { .. } => PaymentType::Payment,
            PaymentKind::PathPayment {
                strict: PathPaymentStrictness::StrictReceive,
                ..
            } => PaymentType::PathPaymentStrictReceive,
            PaymentKind::PathPayment {
                strict: PathPaymentStrictness::StrictSend,
                ..
            } => PaymentType::PathPaymentStrictSend,
            PaymentKind::AccountMerge { .. } => PaymentType::AccountMerge,
            PaymentKind::InvokeHostFunction { .. } => PaymentType::InvokeHostFunction,
        }
    }

    /// Whether the transaction succeeded.
    pub fn successful(&self) -> bool {
        self.transaction.successful()
    }

    /// The record's destination account, for the kinds that have one.
    pub fn destination(&self) -> Option<MuxedAccountId> {
        match &self.kind {
            PaymentKind::CreateAccount { account, .. } => Some(MuxedAccountId::plain(*account)),
            PaymentKind::Payment { to, .. } | PaymentKind::PathPayment { to, .. } => Some(*to),
            PaymentKind::AccountMerge { into, .. } => Some(*into),
            PaymentKind::InvokeHostFunction { .. } => None,
        }
    }

    /// The asset received, for kinds with one asset.
    pub fn asset(&self) -> Option<Asset> {
        match &self.kind {
            PaymentKind::CreateAccount { .. } | PaymentKind::AccountMerge { .. } => {
                Some(Asset::Native)
            }
            PaymentKind::Payment { asset, .. } | PaymentKind::PathPayment { asset, .. } => {
                Some(*asset)
            }
            PaymentKind::InvokeHostFunction { .. } => None,
        }
    }

    /// Every asset this record moves (for the asset filter): the received asset, a path
    /// payment's source asset, and each balance change's asset.
    pub fn assets(&self) -> Vec<Asset> {
        let mut assets = Vec::with_capacity(2);
        match &self.kind {
            PaymentKind::PathPayment {
                asset,
                source_asset,
                ..
            } => {
                assets.push(*asset);
                assets.push(*source_asset);
            }
            PaymentKind::InvokeHostFunction {
                balance_changes, ..
            } => {
                assets.extend(balance_changes.iter().map(|c| c.asset));
            }
            _ => assets.extend(self.asset()),
        }
        assets.sort_unstable();
        assets.dedup();
        assets
    }

    /// Every account whose history this record belongs in, each once, with how it takes
    /// part: the source (funder, sender, merged account, invoker), the destination, and
    /// every account on either side of a contract event. Contracts are participants too
    /// (their `C...` address), so contract history can be served the same way.
    pub fn participants(&self) -> Vec<Participant> {
        let mut out: Vec<Participant> = Vec::with_capacity(2);
        let mut add = |address: ParticipantAddress, role: Role| match out
            .iter_mut()
            .find(|p| p.address == address)
        {
            Some(existing) => existing.role = existing.role.merge(role),
            None => out.push(Participant { address, role }),
        };
        add(
            ParticipantAddress::Account(self.source.account),
            Role::Sender,
        );
        if let Some(dest) = self.destination() {
            add(ParticipantAddress::Account(dest.account), Role::Receiver);
        }
        if let PaymentKind::InvokeHostFunction {
            balance_changes, ..
        } = &self.kind
        {
            for change in balance_changes {
                if let Some(from) = &change.from {
                    add(ParticipantAddress::from_address(from), Role::Sender);
                }
                if let Some(to) = &change.to {
                    add(ParticipantAddress::from_address(to), Role::Receiver);
                }
            }
        }
        out
    }
}

/// An address whose history a record belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParticipantAddress {
    /// A `G...` account.
    Account(AccountId),
    /// Any other address (contract, claimable balance, liquidity pool), by its strkey kind.
    Other(AddressKind, [u8; 32]),
}

/// The non-account address kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKind {
    /// `C...`
    Contract,
    /// `B...`
    ClaimableBalance,
    /// `L...`
    LiquidityPool,
}

impl ParticipantAddress {
    fn from_address(address: &Address) -> Self {
        match address {
            Address::Account(a) => Self::Account(a.account),
            Address::Contract(c) => Self::Other(AddressKind::Contract, *c),
            Address::ClaimableBalance(b) => Self::Other(AddressKind::ClaimableBalance, *b),
            Address::LiquidityPool(p) => Self::Other(AddressKind::LiquidityPool, *p),
        }
    }

    /// The strkey.
    pub fn to_strkey(&self) -> String {
        match self {
            Self::Account(a) => a.to_strkey(),
            Self::Other(AddressKind::Contract, c) => Address::Contract(*c).to_strkey(),
            Self::Other(AddressKind::ClaimableBalance, b) => {
                Address::ClaimableBalance(*b).to_strkey()
            }
            Self::Other(AddressKind::LiquidityPool, p) => Address::LiquidityPool(*p).to_strkey(),
        }
    }
}

/// How a participant takes part in a record; the API's `direction` filter reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent (or funded, merged away, invoked).
    Sender,
    /// Received.
    Receiver,
    /// Both (a payment to oneself, a self path payment).
    Both,
}

impl Role {
    fn merge(self, other: Role) -> Role {
        if self == other {
            self
        } else {
            Role::Both
        }
    }

    /// Whether the participant sent.
    pub fn is_outgoing(self) -> bool {
        matches!(self, Role::Sender | Role::Both)
    }

    /// Whether the participant received.
    pub fn is_incoming(self) -> bool {
        matches!(self, Role::Receiver | Role::Both)
    }
}

/// A participant of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Participant {
    /// Whose history.
    pub address: ParticipantAddress,
    /// In which direction.
    pub role: Role,
}

/// The header facts of a ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerInfo {
    /// Sequence.
    pub sequence: u32,
    /// Hash of this ledger's header.
    pub hash: [u8; 32],
    /// Hash of the previous ledger's header.
    pub previous_hash: [u8; 32],
    /// Close time, seconds since the epoch.
    pub closed_at: i64,
    /// Protocol version.
    pub protocol_version: u32,
    /// `LedgerCloseMeta` version (0, 1 or 2).
    pub meta_version: u8,
}

/// Counts of what a ledger held; the per-ledger facts the fixtures' summaries list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Transactions applied.
    pub transactions: u32,
    /// Of which successful.
    pub successful_transactions: u32,
    /// Operations in all transactions.
    pub operations: u32,
    /// Payment-type operations (every `invoke_host_function` included) by type, in
    /// successful transactions.
    pub payment_ops_successful: std::collections::BTreeMap<PaymentType, u32>,
    /// The same in failed transactions.
    pub payment_ops_failed: std::collections::BTreeMap<PaymentType, u32>,
    /// Contract events with the `transfer` topic in successful transactions, any contract.
    pub transfer_events_successful: u32,
    /// Stellar Asset Contract balance events in successful transactions, by kind.
    pub sac_events_successful: std::collections::BTreeMap<&'static str, u32>,
    /// Successful `invoke_host_function` operations with at least one SAC balance event
    /// (the ones that are payments).
    pub invoke_host_function_payments: u32,
}

/// Everything the extractor takes out of one ledger.
#[derive(Clone, Debug)]
pub struct LedgerPayments {
    /// The ledger header's facts.
    pub ledger: LedgerInfo,
    /// The transactions that have at least one payment record, in application order.
    pub transactions: Vec<Arc<TransactionContext>>,
    /// Payment records in id order, failed transactions' included.
    pub payments: Vec<PaymentRecord>,
    /// Counts.
    pub stats: LedgerStats,
}
