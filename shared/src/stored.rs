//! The stored-row format: the codes and the JSON that the writer puts into Postgres and
//! the reader reads back, defined once so the two sides cannot drift apart.
//!
//! What must hold: every code and JSON field name here is part of the database schema
//! (rows written by any earlier writer must still read back), so changing one needs a
//! migration of the stored rows. Each encoding has a decoder that gives back exactly the
//! domain value it was made from; the round-trip tests below need no database.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::asset::Asset;
use crate::payment::{
    AssetBalanceChange, BalanceChangeKind, HostFunction, Memo, PaymentKind, Role,
};

/// A stored value that does not decode: the row was not written by this format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored row format: {0}")]
pub struct RowFormatError(String);

impl RowFormatError {
    fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// `transactions.memo_type`: which memo, with its bytes in `transactions.memo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i16)]
pub enum MemoCode {
    /// No memo; no bytes.
    None = 0,
    /// Text memo; its raw bytes (not necessarily UTF-8).
    Text = 1,
    /// Id memo; the id as 8 big-endian bytes.
    Id = 2,
    /// Hash memo; 32 bytes.
    Hash = 3,
    /// Return memo; 32 bytes.
    Return = 4,
}

/// The memo as its two columns: type code and bytes.
pub fn encode_memo(memo: &Memo) -> (i16, Option<Vec<u8>>) {
    let (code, bytes) = match memo {
        Memo::None => (MemoCode::None, None),
        Memo::Text(bytes) => (MemoCode::Text, Some(bytes.clone())),
        Memo::Id(id) => (MemoCode::Id, Some(id.to_be_bytes().to_vec())),
        Memo::Hash(h) => (MemoCode::Hash, Some(h.to_vec())),
        Memo::Return(h) => (MemoCode::Return, Some(h.to_vec())),
    };
    (code as i16, bytes)
}

/// The memo back from its two columns.
pub fn decode_memo(code: i16, bytes: Option<Vec<u8>>) -> Result<Memo, RowFormatError> {
    let sized = |b: &[u8], what: &str| -> Result<[u8; 32], RowFormatError> {
        b.try_into()
            .map_err(|_| RowFormatError::new(format!("{what} memo of {} bytes", b.len())))
    };
    Ok(match (code, bytes) {
        (c, _) if c == MemoCode::None as i16 => Memo::None,
        (c, Some(b)) if c == MemoCode::Text as i16 => Memo::Text(b),
        (c, Some(b)) if c == MemoCode::Id as i16 => {
            let bytes: [u8; 8] = b
                .as_slice()
                .try_into()
                .map_err(|_| RowFormatError::new(format!("id memo of {} bytes", b.len())))?;
            Memo::Id(u64::from_be_bytes(bytes))
        }
        (c, Some(b)) if c == MemoCode::Hash as i16 => Memo::Hash(sized(&b, "hash")?),
        (c, Some(b)) if c == MemoCode::Return as i16 => Memo::Return(sized(&b, "return")?),
        (c, None) if (1..=4).contains(&c) => {
            return Err(RowFormatError::new(format!("memo type {c} without bytes")))
        }
        (c, _) => return Err(RowFormatError::new(format!("memo type {c}"))),
    })
}

/// `direction` of the account history tables: how the account took part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i16)]
pub enum DirectionCode {
    /// The account sent (or funded, merged away, invoked).
    Sent = 1,
    /// The account received.
    Received = 2,
    /// Both (a payment to oneself).
    Both = 3,
}

impl DirectionCode {
    /// The stored code.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The codes of rows where the account sent: `Sent` and `Both`.
    pub const OUTGOING: [i16; 2] = [Self::Sent as i16, Self::Both as i16];
    /// The codes of rows where the account received: `Received` and `Both`.
    pub const INCOMING: [i16; 2] = [Self::Received as i16, Self::Both as i16];

    /// The role back from a stored code.
    pub fn decode(code: i16) -> Result<Role, RowFormatError> {
        match code {
            c if c == Self::Sent as i16 => Ok(Role::Sender),
            c if c == Self::Received as i16 => Ok(Role::Receiver),
            c if c == Self::Both as i16 => Ok(Role::Both),
            c => Err(RowFormatError::new(format!("direction {c}"))),
        }
    }
}

impl From<Role> for DirectionCode {
    fn from(role: Role) -> Self {
        match role {
            Role::Sender => Self::Sent,
            Role::Receiver => Self::Received,
            Role::Both => Self::Both,
        }
    }
}

/// `payments.details` of an `invoke_host_function` payment (JSON): enough to rebuild the
/// domain record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeDetails {
    /// The host function invoked.
    pub function: StoredHostFunction,
    /// The Stellar Asset Contract balance changes it caused.
    pub balance_changes: Vec<StoredBalanceChange>,
}

/// The host function, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredHostFunction {
    /// A contract call.
    InvokeContract {
        /// The contract's strkey.
        contract: String,
        /// The function name.
        function: String,
        /// The arguments as `[XDR type name, base64 XDR]` pairs.
        args: Vec<(String, String)>,
    },
    /// Contract creation.
    CreateContract {
        /// The deploying address's strkey.
        #[serde(default)]
        deployer: Option<String>,
        /// The salt in hex.
        #[serde(default)]
        salt: Option<String>,
        /// The wrapped asset, canonical form.
        #[serde(default)]
        asset: Option<String>,
    },
    /// Wasm upload.
    UploadWasm,
}

/// One balance change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBalanceChange {
    /// `transfer`, `mint`, `burn` or `clawback`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The asset, canonical form.
    pub asset: String,
    /// Who gave (strkey).
    #[serde(default)]
    pub from: Option<String>,
    /// Who received (strkey, unmuxed).
    #[serde(default)]
    pub to: Option<String>,
    /// The receiver's muxed id, in decimal.
    #[serde(default)]
    pub to_muxed_id: Option<String>,
    /// The amount in stroops, in decimal (128-bit).
    pub amount: String,
}

impl InvokeDetails {
    /// The stored form of an `invoke_host_function` payment's specifics.
    pub fn new(function: &HostFunction, changes: &[AssetBalanceChange]) -> Self {
        let function = match function {
            HostFunction::InvokeContract {
                contract,
                function,
                args,
            } => StoredHostFunction::InvokeContract {
                contract: contract.to_strkey(),
                function: function.clone(),
                args: args.clone(),
            },
            HostFunction::CreateContract {
                deployer,
                salt,
                asset,
            } => StoredHostFunction::CreateContract {
                deployer: deployer.map(|d| d.to_strkey()),
                salt: salt.map(hex::encode),
                asset: asset.map(|a| a.canonical()),
            },
            HostFunction::UploadWasm => StoredHostFunction::UploadWasm,
        };
        let balance_changes = changes
            .iter()
            .map(|c| {
                let to_muxed_id = match &c.to {
                    Some(Address::Account(a)) => a.muxed_id.map(|id| id.to_string()),
                    _ => None,
                };
                StoredBalanceChange {
                    kind: c.kind.as_str().to_owned(),
                    asset: c.asset.canonical(),
                    from: c.from.map(|a| a.to_strkey()),
                    to: c.to.map(|a| a.to_strkey()),
                    to_muxed_id,
                    amount: c.amount.to_string(),
                }
            })
            .collect();
        Self {
            function,
            balance_changes,
        }
    }

    /// The domain record's kind back.
    pub fn into_kind(self) -> Result<PaymentKind, RowFormatError> {
        let address =
            |s: &str| Address::parse(s).ok_or_else(|| RowFormatError::new(format!("address {s}")));
        let asset = |s: &str| {
            Asset::parse_canonical(s).map_err(|_| RowFormatError::new(format!("asset {s}")))
        };
        let function = match self.function {
            StoredHostFunction::InvokeContract {
                contract,
                function,
                args,
            } => HostFunction::InvokeContract {
                contract: address(&contract)?,
                function,
                args,
            },
            StoredHostFunction::CreateContract {
                deployer,
                salt,
                asset: wrapped,
            } => HostFunction::CreateContract {
                deployer: deployer.as_deref().map(address).transpose()?,
                salt: match salt {
                    Some(text) => {
                        let mut salt = [0u8; 32];
                        hex::decode_to_slice(&text, &mut salt)
                            .map_err(|_| RowFormatError::new(format!("salt {text}")))?;
                        Some(salt)
                    }
                    None => None,
                },
                asset: wrapped.as_deref().map(asset).transpose()?,
            },
            StoredHostFunction::UploadWasm => HostFunction::UploadWasm,
        };
        let balance_changes = self
            .balance_changes
            .into_iter()
            .map(|c| {
                let kind = BalanceChangeKind::from_symbol(c.kind.as_bytes())
                    .ok_or_else(|| RowFormatError::new(format!("change type {}", c.kind)))?;
                let mut to = c.to.as_deref().map(address).transpose()?;
                if let (Some(Address::Account(account)), Some(id)) = (to.as_mut(), &c.to_muxed_id) {
                    account.muxed_id = Some(
                        id.parse()
                            .map_err(|_| RowFormatError::new(format!("muxed id {id}")))?,
                    );
                }
                Ok(AssetBalanceChange {
                    kind,
                    asset: asset(&c.asset)?,
                    from: c.from.as_deref().map(address).transpose()?,
                    to,
                    amount: c
                        .amount
                        .parse()
                        .map_err(|_| RowFormatError::new(format!("amount {}", c.amount)))?,
                })
            })
            .collect::<Result<_, RowFormatError>>()?;
        Ok(PaymentKind::InvokeHostFunction {
            function,
            balance_changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::MuxedAccountId;

    const G: &str = "GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A";
    const C: &str = "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA";

    #[test]
    fn memos_round_trip_and_keep_their_codes() {
        let memos = [
            (Memo::None, 0),
            (Memo::Text(vec![0xff, b'a', 0]), 1),
            (Memo::Id(u64::MAX), 2),
            (Memo::Hash([7; 32]), 3),
            (Memo::Return([9; 32]), 4),
        ];
        for (memo, code) in memos {
            let (stored, bytes) = encode_memo(&memo);
            assert_eq!(stored, code, "{memo:?}");
            assert_eq!(decode_memo(stored, bytes), Ok(memo));
        }
        assert!(decode_memo(5, None).is_err());
        assert!(decode_memo(2, Some(vec![1, 2, 3])).is_err());
        assert!(decode_memo(3, None).is_err());
    }

    #[test]
    fn directions_round_trip_and_keep_their_codes() {
        for (role, code) in [(Role::Sender, 1), (Role::Receiver, 2), (Role::Both, 3)] {
            assert_eq!(DirectionCode::from(role).code(), code);
            assert_eq!(DirectionCode::decode(code), Ok(role));
        }
        assert_eq!(DirectionCode::OUTGOING, [1, 3]);
        assert_eq!(DirectionCode::INCOMING, [2, 3]);
        assert!(DirectionCode::decode(0).is_err());
    }

    fn account(muxed_id: Option<u64>) -> Address {
        let Some(Address::Account(plain)) = Address::parse(G) else {
            panic!("{G} is an account")
        };
        Address::Account(MuxedAccountId {
            account: plain.account,
            muxed_id,
        })
    }

    #[test]
    fn invoke_details_round_trip() {
        let usdc = Asset::parse_canonical(&format!("USDC:{G}")).expect("asset");
        let kinds = [
            PaymentKind::InvokeHostFunction {
                function: HostFunction::InvokeContract {
                    contract: Address::parse(C).expect("contract"),
                    function: "transfer".into(),
                    args: vec![("Address".into(), "AAAAEgAAAAA=".into())],
                },
                balance_changes: vec![
                    AssetBalanceChange {
                        kind: BalanceChangeKind::Transfer,
                        asset: usdc,
                        from: Some(account(None)),
                        to: Some(account(Some(42))),
                        amount: i128::MAX,
                    },
                    AssetBalanceChange {
                        kind: BalanceChangeKind::Mint,
                        asset: Asset::Native,
                        from: None,
                        to: Some(Address::parse(C).expect("contract")),
                        amount: 1,
                    },
                ],
            },
            PaymentKind::InvokeHostFunction {
                function: HostFunction::CreateContract {
                    deployer: Some(account(None)),
                    salt: Some([0xab; 32]),
                    asset: None,
                },
                balance_changes: vec![],
            },
            PaymentKind::InvokeHostFunction {
                function: HostFunction::CreateContract {
                    deployer: None,
                    salt: None,
                    asset: Some(Asset::Native),
                },
                balance_changes: vec![],
            },
            PaymentKind::InvokeHostFunction {
                function: HostFunction::UploadWasm,
                balance_changes: vec![],
            },
        ];
        for kind in kinds {
            let PaymentKind::InvokeHostFunction {
                function,
                balance_changes,
            } = &kind
            else {
                unreachable!()
            };
            let details = InvokeDetails::new(function, balance_changes);
            // Through JSON text, as Postgres stores it.
            let text = serde_json::to_string(&details).expect("serialises");
            let back: InvokeDetails = serde_json::from_str(&text).expect("parses");
            assert_eq!(back.into_kind(), Ok(kind));
        }
    }

    #[test]
    fn invoke_details_keep_their_json_shape() {
        let details = InvokeDetails::new(
            &HostFunction::InvokeContract {
                contract: Address::parse(C).expect("contract"),
                function: "mint".into(),
                args: vec![("U32".into(), "AAAAAw==".into())],
            },
            &[AssetBalanceChange {
                kind: BalanceChangeKind::Burn,
                asset: Asset::Native,
                from: Some(account(None)),
                to: None,
                amount: -5,
            }],
        );
        let expected = serde_json::json!({
            "function": {
                "kind": "invoke_contract",
                "contract": C,
                "function": "mint",
                "args": [["U32", "AAAAAw=="]],
            },
            "balance_changes": [{
                "type": "burn",
                "asset": "native",
                "from": G,
                "to": null,
                "to_muxed_id": null,
                "amount": "-5",
            }],
        });
        assert_eq!(
            serde_json::to_value(&details).expect("serialises"),
            expected
        );
        // Rows written before this module omitted nothing, but absent optional fields
        // still read as absent.
        let sparse: InvokeDetails = serde_json::from_value(serde_json::json!({
            "function": { "kind": "create_contract" },
            "balance_changes": [],
        }))
        .expect("parses");
        assert_eq!(
            sparse.function,
            StoredHostFunction::CreateContract {
                deployer: None,
                salt: None,
                asset: None
            }
        );
    }
}
