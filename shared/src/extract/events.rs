//! Stellar Asset Contract balance events (`transfer`, `mint`, `burn`, `clawback`), in both
//! the pre-CAP-67 form (protocol 20-22: `mint` and `clawback` name the admin) and the
//! CAP-67 form (protocol 23+: no admin; a muxed destination puts its id in the data map).
//! An event only counts when the emitting contract is the asset's own SAC on this
//! network, so a token contract cannot pass itself off as one.

use std::collections::HashMap;

use stellar_xdr::{ContractEvent, ContractEventBody, ContractEventType, ScVal};

use crate::address::{Address, MuxedAccountId};
use crate::asset::Asset;
use crate::payment::{AssetBalanceChange, BalanceChangeKind};

/// Resolves SEP-11 asset strings to assets and their SAC contract ids, remembering each.
#[derive(Debug, Clone, Default)]
pub(crate) struct SacRegistry {
    known: HashMap<Vec<u8>, Option<(Asset, [u8; 32])>>,
}

impl SacRegistry {
    fn resolve(&mut self, asset_text: &[u8], network_id: &[u8; 32]) -> Option<(Asset, [u8; 32])> {
        if let Some(known) = self.known.get(asset_text) {
            return *known;
        }
        let resolved = std::str::from_utf8(asset_text)
            .ok()
            .and_then(|text| Asset::parse_canonical(text).ok())
            .map(|asset| (asset, asset.stellar_asset_contract_id(*network_id)));
        self.known.insert(asset_text.to_vec(), resolved);
        resolved
    }
}

/// The topic symbol of a contract event, if its first topic is a symbol.
pub(crate) fn topic_symbol(event: &ContractEvent) -> Option<&[u8]> {
    let ContractEventBody::V0(body) = &event.body;
    match body.topics.first() {
        Some(ScVal::Symbol(symbol)) => Some(symbol.0.as_slice()),
        _ => None,
    }
}

/// Reads a SAC balance event; `None` for any other event.
pub(crate) fn sac_balance_change(
    event: &ContractEvent,
    registry: &mut SacRegistry,
    network_id: &[u8; 32],
) -> Option<AssetBalanceChange> {
    if event.type_ != ContractEventType::Contract {
        return None;
    }
    let contract_id = event.contract_id.as_ref()?.0 .0;
    let kind = BalanceChangeKind::from_symbol(topic_symbol(event)?)?;
    let ContractEventBody::V0(body) = &event.body;
    let topics = body.topics.as_slice();
    let asset_text = match topics.last()? {
        ScVal::String(s) => s.0.as_slice(),
        _ => return None,
    };
    let (asset, sac_id) = registry.resolve(asset_text, network_id)?;
    if sac_id != contract_id {
        return None;
    }
    let address = |i: usize| match topics.get(i) {
        Some(ScVal::Address(a)) => Some(Address::from_sc_address(a)),
        _ => None,
    };
    let (from, to) = match (kind, topics.len()) {
        (BalanceChangeKind::Transfer, 4) => (Some(address(1)?), Some(address(2)?)),
        // CAP-67 form, then the older form with the admin first.
        (BalanceChangeKind::Mint, 3) => (None, Some(address(1)?)),
        (BalanceChangeKind::Mint, 4) => (None, Some(address(2)?)),
        (BalanceChangeKind::Burn, 3) => (Some(address(1)?), None),
        (BalanceChangeKind::Clawback, 3) => (Some(address(1)?), None),
        (BalanceChangeKind::Clawback, 4) => (Some(address(2)?), None),
        _ => return None,
    };
    let (amount, to_muxed_id) = event_amount(&body.data)?;
    let to = match (to, to_muxed_id) {
        (Some(Address::Account(account)), Some(id)) => Some(Address::Account(MuxedAccountId {
            account: account.account,
            muxed_id: Some(id),
        })),
        (to, _) => to,
    };
    Some(AssetBalanceChange {
        kind,
        asset,
        from,
        to,
        amount,
    })
}

/// The amount of a balance event: a bare i128, or (CAP-67, muxed destination) a map with
/// `amount` and `to_muxed_id`. Only a 64-bit muxed id maps onto an `M...` address; the
/// other id forms (bytes, string) are memos for contracts and are not kept.
fn event_amount(data: &ScVal) -> Option<(i128, Option<u64>)> {
    match data {
        ScVal::I128(parts) => Some((i128_from_parts(parts), None)),
        ScVal::Map(Some(map)) => {
            let mut amount = None;
            let mut muxed_id = None;
            for entry in map.0.iter() {
                match (&entry.key, &entry.val) {
                    (ScVal::Symbol(k), ScVal::I128(parts)) if k.0.as_slice() == b"amount" => {
                        amount = Some(i128_from_parts(parts));
                    }
                    (ScVal::Symbol(k), ScVal::U64(id)) if k.0.as_slice() == b"to_muxed_id" => {
                        muxed_id = Some(*id);
                    }
                    _ => {}
                }
            }
            Some((amount?, muxed_id))
        }
        _ => None,
    }
}

fn i128_from_parts(parts: &stellar_xdr::Int128Parts) -> i128 {
    (i128::from(parts.hi) << 64) | i128::from(parts.lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i128_parts_combine() {
        let parts = |hi, lo| stellar_xdr::Int128Parts { hi, lo };
        assert_eq!(i128_from_parts(&parts(0, 5)), 5);
        assert_eq!(i128_from_parts(&parts(-1, u64::MAX)), -1);
        assert_eq!(i128_from_parts(&parts(1, 0)), 1i128 << 64);
    }
}
