//! The synthetic network's cast: accounts with Zipf popularity, the assets (lumens and a
//! handful of credit assets whose issuers are among the accounts) with their Stellar
//! Asset Contract ids, and two non-asset contracts (a swap router and an impostor
//! token). Everything is derived from the seed, so the same seed names the same parties.

use sha2::{Digest, Sha256};
use shared::address::{AccountId, Address, MuxedAccountId};
use shared::asset::Asset;
use stellar_xdr::{
    AccountId as XdrAccountId, ContractId, Hash, MuxedAccount, MuxedAccountMed25519,
    MuxedEd25519Account, PublicKey, ScAddress, ScString, ScVal, Uint256,
};

use super::rng::{Rng, Zipf};

/// Fewest accounts a world has: the issuers and a few more.
pub(crate) const MIN_ACCOUNTS: u32 = 16;
/// How many of the most popular accounts have their key cached.
const KEY_CACHE: u64 = 1 << 16;

/// The credit assets: code, and the index of the issuing account. Codes of up to four
/// characters are alphanum4, longer ones alphanum12 (as `Asset::parse_canonical`, and so
/// the SAC events, read them).
const CREDIT_ASSETS: [(&str, u64); 6] = [
    ("USDC", 1),
    ("EURC", 3),
    ("yXLM", 5),
    ("AQUA", 7),
    ("BTCLN", 9),
    ("STELLARGOLD1", 11),
];

/// How often each asset (lumens first, then [`CREDIT_ASSETS`]) is chosen.
const ASSET_WEIGHTS: [u32; 7] = [40, 25, 10, 8, 8, 5, 4];

/// One asset in its three forms, with its contract.
#[derive(Clone, Debug)]
pub(crate) struct AssetInfo {
    /// The domain form.
    pub(crate) asset: Asset,
    /// The XDR form.
    pub(crate) xdr: stellar_xdr::Asset,
    /// Its Stellar Asset Contract id on the world's network.
    pub(crate) sac_id: [u8; 32],
    /// The SEP-11 string topic SAC events end with.
    pub(crate) topic: ScVal,
    /// The issuing account's index (none for lumens).
    pub(crate) issuer: Option<u64>,
}

/// Accounts, assets and contracts of one generated chain.
#[derive(Debug)]
pub(crate) struct World {
    seed: u64,
    accounts: u64,
    zipf: Zipf,
    keys: Vec<[u8; 32]>,
    /// Lumens at 0, then the credit assets.
    pub(crate) assets: Vec<AssetInfo>,
    /// A swap router contract (not an asset contract).
    pub(crate) router: [u8; 32],
    /// A token contract that emits `transfer` events naming a real asset: never a SAC.
    pub(crate) impostor: [u8; 32],
}

impl World {
    pub(crate) fn new(seed: u64, accounts: u32, zipf_exponent: f64, network_id: [u8; 32]) -> Self {
        let accounts = u64::from(accounts.max(MIN_ACCOUNTS));
        let keys = (0..accounts.min(KEY_CACHE))
            .map(|i| account_key(seed, i))
            .collect();
        let mut world = Self {
            seed,
            accounts,
            zipf: Zipf::new(accounts, zipf_exponent),
            keys,
            assets: Vec::new(),
            router: derive_key(seed, b"router", 0),
            impostor: derive_key(seed, b"impostor", 0),
        };
        world
            .assets
            .push(asset_info(Asset::Native, None, network_id));
        for (code, issuer) in CREDIT_ASSETS {
            let text = format!("{code}:{}", AccountId(world.key(issuer)).to_strkey());
            // The codes above are valid by construction; a failure would be a typo there.
            let asset = Asset::parse_canonical(&text).unwrap_or(Asset::Native);
            world
                .assets
                .push(asset_info(asset, Some(issuer), network_id));
        }
        world
    }

    /// The key of account `index`: SHA-256 of the seed, a domain tag and the index.
    pub(crate) fn key(&self, index: u64) -> [u8; 32] {
        match self.keys.get(index as usize) {
            Some(key) => *key,
            None => account_key(self.seed, index),
        }
    }

    /// A key for a one-off party (a created or merged account), from a counter.
    pub(crate) fn fresh_key(&self, counter: u64) -> [u8; 32] {
        derive_key(self.seed, b"fresh", counter)
    }

    /// A Zipf-popular account's index.
    pub(crate) fn popular(&self, rng: &mut Rng) -> u64 {
        self.zipf.sample(rng) % self.accounts
    }

    /// A random asset index, weighted by popularity.
    pub(crate) fn asset(&self, rng: &mut Rng) -> usize {
        rng.weighted(&ASSET_WEIGHTS)
    }

    /// A random credit asset index.
    pub(crate) fn credit_asset(&self, rng: &mut Rng) -> usize {
        1 + rng.weighted(&ASSET_WEIGHTS[1..])
    }

    /// The native SAC id (fee events come from it).
    pub(crate) fn native_sac(&self) -> [u8; 32] {
        self.assets[0].sac_id
    }
}

/// The key of account `index` in the world of `seed` (as [`World::key`]).
pub(crate) fn account_key(seed: u64, index: u64) -> [u8; 32] {
    derive_key(seed, b"account", index)
}

fn derive_key(seed: u64, domain: &[u8], index: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(domain);
    hasher.update(index.to_le_bytes());
    hasher.finalize().into()
}

fn asset_info(asset: Asset, issuer: Option<u64>, network_id: [u8; 32]) -> AssetInfo {
    AssetInfo {
        xdr: asset.to_xdr(),
        sac_id: asset.stellar_asset_contract_id(network_id),
        topic: ScVal::String(ScString(
            asset
                .canonical()
                .into_bytes()
                .try_into()
                .unwrap_or_default(),
        )),
        issuer,
        asset,
    }
}

/// An account as a transaction names it: its key, multiplexed or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Party {
    pub(crate) key: [u8; 32],
    pub(crate) muxed_id: Option<u64>,
}

impl Party {
    pub(crate) fn plain(key: [u8; 32]) -> Self {
        Self {
            key,
            muxed_id: None,
        }
    }

    pub(crate) fn muxed_account(&self) -> MuxedAccount {
        match self.muxed_id {
            None => MuxedAccount::Ed25519(Uint256(self.key)),
            Some(id) => MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                id,
                ed25519: Uint256(self.key),
            }),
        }
    }

    pub(crate) fn id(&self) -> MuxedAccountId {
        MuxedAccountId {
            account: AccountId(self.key),
            muxed_id: self.muxed_id,
        }
    }

    pub(crate) fn account_id(&self) -> XdrAccountId {
        account_id(self.key)
    }

    /// The contract-side address: a muxed account as `ScAddress::MuxedAccount` (CAP-67
    /// `MuxedAddress` arguments), a plain one as `ScAddress::Account`.
    pub(crate) fn sc_address(&self) -> ScAddress {
        match self.muxed_id {
            None => ScAddress::Account(self.account_id()),
            Some(id) => ScAddress::MuxedAccount(MuxedEd25519Account {
                id,
                ed25519: Uint256(self.key),
            }),
        }
    }
}

/// A party to a contract call or event: an account or a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    Account(Party),
    Contract([u8; 32]),
}

impl Holder {
    /// The address as an event topic names it: always the base account (a muxed id goes
    /// into the event data, CAP-67).
    pub(crate) fn topic(&self) -> ScVal {
        ScVal::Address(match self {
            Self::Account(party) => ScAddress::Account(party.account_id()),
            Self::Contract(id) => ScAddress::Contract(ContractId(Hash(*id))),
        })
    }

    /// The address as a call argument names it (muxed accounts stay muxed).
    pub(crate) fn argument(&self) -> ScVal {
        ScVal::Address(match self {
            Self::Account(party) => party.sc_address(),
            Self::Contract(id) => ScAddress::Contract(ContractId(Hash(*id))),
        })
    }

    /// The address as the extractor reports it from an event.
    pub(crate) fn address(&self) -> Address {
        match self {
            Self::Account(party) => Address::Account(party.id()),
            Self::Contract(id) => Address::Contract(*id),
        }
    }

    /// The same holder without its muxed id.
    pub(crate) fn base(&self) -> Self {
        match self {
            Self::Account(party) => Self::Account(Party::plain(party.key)),
            other => *other,
        }
    }

    pub(crate) fn muxed_id(&self) -> Option<u64> {
        match self {
            Self::Account(party) => party.muxed_id,
            Self::Contract(_) => None,
        }
    }
}

pub(crate) fn account_id(key: [u8; 32]) -> XdrAccountId {
    XdrAccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_natural_kinds_and_issuers_among_accounts() {
        let network = shared::Network::pubnet();
        let world = World::new(1, 100, 1.0, network.id());
        assert_eq!(world.assets.len(), ASSET_WEIGHTS.len());
        for info in &world.assets[1..] {
            let parsed = Asset::parse_canonical(&info.asset.canonical()).expect("canonical");
            assert_eq!(parsed, info.asset);
            assert_ne!(parsed, Asset::Native);
            let issuer = info.issuer.expect("issuer");
            assert_eq!(info.asset.issuer(), Some(&AccountId(world.key(issuer))));
        }
        assert!(world
            .assets
            .iter()
            .any(|a| a.asset.type_name() == "credit_alphanum12"));
        assert_eq!(world.key(5), derive_key(1, b"account", 5));
        assert_eq!(world.key(1 << 20), derive_key(1, b"account", 1 << 20));
    }
}
