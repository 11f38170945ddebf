//! Account and contract addresses. Inside the system they are raw 32-byte keys (cheap to
//! copy and compare while extracting); they become strkeys (`G...`, `M...`, `C...`) only
//! when rendered or stored.

use std::fmt;
use std::str::FromStr;

use stellar_xdr::{MuxedAccount, ScAddress};

/// A classic account: an ed25519 public key, shown as a `G...` strkey.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// The `G...` form.
    pub fn to_strkey(&self) -> String {
        stellar_strkey::ed25519::PublicKey(self.0)
            .to_string()
            .as_str()
            .to_owned()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&stellar_strkey::ed25519::PublicKey(self.0), f)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// Why text is not an account id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid Stellar account id (G... or M... strkey)")]
pub struct InvalidAccountId(pub String);

impl FromStr for AccountId {
    type Err = InvalidAccountId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        stellar_strkey::ed25519::PublicKey::from_string(s)
            .map(|k| Self(k.0))
            .map_err(|_| InvalidAccountId(s.to_owned()))
    }
}

impl From<&stellar_xdr::AccountId> for AccountId {
    fn from(id: &stellar_xdr::AccountId) -> Self {
        let stellar_xdr::PublicKey::PublicKeyTypeEd25519(key) = &id.0;
        Self(key.0)
    }
}

/// An account as a transaction names it: a base account, possibly multiplexed with a
/// 64-bit id (SEP-23 `M...` addresses). History belongs to the base account.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MuxedAccountId {
    /// The account that holds the balance.
    pub account: AccountId,
    /// The multiplexing id, when the address was an `M...` one.
    pub muxed_id: Option<u64>,
}

impl MuxedAccountId {
    /// A plain, unmultiplexed account.
    pub fn plain(account: AccountId) -> Self {
        Self {
            account,
            muxed_id: None,
        }
    }

    /// The `M...` form, when multiplexed.
    pub fn muxed_strkey(&self) -> Option<String> {
        self.muxed_id.map(|id| {
            stellar_strkey::ed25519::MuxedAccount {
                ed25519: self.account.0,
                id,
            }
            .to_string()
            .as_str()
            .to_owned()
        })
    }

    /// Parses a `G...` or `M...` address.
    pub fn parse(s: &str) -> Result<Self, InvalidAccountId> {
        if let Ok(account) = s.parse::<AccountId>() {
            return Ok(Self::plain(account));
        }
        stellar_strkey::ed25519::MuxedAccount::from_string(s)
            .map(|m| Self {
                account: AccountId(m.ed25519),
                muxed_id: Some(m.id),
            })
            .map_err(|_| InvalidAccountId(s.to_owned()))
    }
}

impl fmt::Debug for MuxedAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.muxed_id {
            Some(id) => write!(f, "MuxedAccountId({}, {id})", self.account),
            None => write!(f, "MuxedAccountId({})", self.account),
        }
    }
}

impl From<&MuxedAccount> for MuxedAccountId {
    fn from(account: &MuxedAccount) -> Self {
        match account {
            MuxedAccount::Ed25519(key) => Self::plain(AccountId(key.0)),
            MuxedAccount::MuxedEd25519(m) => Self {
                account: AccountId(m.ed25519.0),
                muxed_id: Some(m.id),
            },
        }
    }
}

/// A party to a contract event: anything an `ScAddress` can name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// A classic account, possibly multiplexed (CAP-67 muxed destinations).
    Account(MuxedAccountId),
    /// A contract (`C...`).
    Contract([u8; 32]),
    /// A claimable balance (`B...`).
    ClaimableBalance([u8; 32]),
    /// A liquidity pool (`L...`).
    LiquidityPool([u8; 32]),
}

impl Address {
    /// The strkey of the base address (the account, never its `M...` form).
    pub fn to_strkey(&self) -> String {
        match self {
            Self::Account(a) => a.account.to_strkey(),
            Self::Contract(c) => stellar_strkey::Contract(*c).to_string().as_str().to_owned(),
            Self::ClaimableBalance(b) => stellar_strkey::ClaimableBalance::V0(*b)
                .to_string()
                .as_str()
                .to_owned(),
            Self::LiquidityPool(p) => stellar_strkey::LiquidityPool(*p)
                .to_string()
                .as_str()
                .to_owned(),
        }
    }

    /// The account, when this address is one.
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Self::Account(a) => Some(a.account),
            _ => None,
        }
    }

    /// Parses any address strkey (`G`, `M`, `C`, `B`, `L`).
    pub fn parse(s: &str) -> Option<Self> {
        use stellar_strkey::Strkey;
        Some(match Strkey::from_string(s).ok()? {
            Strkey::PublicKeyEd25519(k) => Self::Account(MuxedAccountId::plain(AccountId(k.0))),
            Strkey::MuxedAccountEd25519(m) => Self::Account(MuxedAccountId {
                account: AccountId(m.ed25519),
                muxed_id: Some(m.id),
            }),
            Strkey::Contract(c) => Self::Contract(c.0),
            Strkey::ClaimableBalance(stellar_strkey::ClaimableBalance::V0(b)) => {
                Self::ClaimableBalance(b)
            }
            Strkey::LiquidityPool(p) => Self::LiquidityPool(p.0),
            _ => return None,
        })
    }

    /// Reads an event party. A multiplexed contract keeps only its contract, as a muxed id
    /// on a contract has no meaning for balances.
    pub fn from_sc_address(address: &ScAddress) -> Self {
        match address {
            ScAddress::Account(id) => Self::Account(MuxedAccountId::plain(id.into())),
            ScAddress::MuxedAccount(m) => Self::Account(MuxedAccountId {
                account: AccountId(m.ed25519.0),
                muxed_id: Some(m.id),
            }),
            ScAddress::Contract(c) => Self::Contract(c.0 .0),
            ScAddress::MuxedContract(m) => Self::Contract(m.contract_id.0 .0),
            ScAddress::ClaimableBalance(
                stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(h),
            ) => Self::ClaimableBalance(h.0),
            ScAddress::LiquidityPool(p) => Self::LiquidityPool(p.0 .0),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strkey())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Account(a) => write!(f, "{a:?}"),
            other => write!(f, "Address({other})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strkeys_round_trip() {
        let g = "GAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTODB4A";
        let m = "MAHK7EEG2WWHVKDNT4CEQFZGKF2LGDSW2IVM4S5DP42RBW3K6BTOCAAAAAADZU6VFBOJ2";
        let account: AccountId = g.parse().expect("valid G");
        assert_eq!(account.to_strkey(), g);
        let muxed = MuxedAccountId::parse(m).expect("valid M");
        assert_eq!(muxed.account, account);
        assert_eq!(muxed.muxed_id, Some(1_020_515_624));
        assert_eq!(muxed.muxed_strkey().as_deref(), Some(m));
        assert!("GAHK7EEG".parse::<AccountId>().is_err());
        assert!(MuxedAccountId::parse("not an account").is_err());
        let c = "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA";
        assert_eq!(Address::parse(c).map(|a| a.to_strkey()).as_deref(), Some(c));
    }
}
