//! Each record belongs in the history of every party: source, destination, and both
//! sides of every Stellar Asset Contract movement of an `invoke_host_function`,
//! contracts included; the direction of each party is kept for `direction=` filters.

use shared::payment::{ParticipantAddress, Role};
use shared::testkit::fixtures;
use shared::PaymentKind;

#[test]
fn invoke_records_reach_every_account_and_contract_they_move() {
    let mut contract_parties = 0;
    for seq in fixtures::PUBNET_LEDGERS {
        for record in fixtures::extract_pubnet(seq).payments {
            let participants = record.participants();
            // Never twice the same address.
            let mut addresses: Vec<_> = participants.iter().map(|p| p.address).collect();
            addresses.sort_unstable();
            addresses.dedup();
            assert_eq!(addresses.len(), participants.len(), "{:?}", record.id);
            let role_of = |strkey: &str| {
                participants
                    .iter()
                    .find(|p| p.address.to_strkey() == strkey)
                    .map(|p| p.role)
            };
            assert!(role_of(&record.source.account.to_strkey()).is_some_and(Role::is_outgoing));
            if let Some(dest) = record.destination() {
                assert!(role_of(&dest.account.to_strkey()).is_some_and(Role::is_incoming));
            }
            if let PaymentKind::InvokeHostFunction {
                balance_changes, ..
            } = &record.kind
            {
                for change in balance_changes {
                    if let Some(from) = &change.from {
                        assert!(role_of(&from.to_strkey()).is_some_and(Role::is_outgoing));
                    }
                    if let Some(to) = &change.to {
                        assert!(role_of(&to.to_strkey()).is_some_and(Role::is_incoming));
                    }
                }
                contract_parties += participants
                    .iter()
                    .filter(|p| matches!(p.address, ParticipantAddress::Other(..)))
                    .count();
            }
        }
    }
    assert!(contract_parties > 0, "some SAC movements involve contracts");
}

#[test]
fn self_payment_is_both_directions() {
    // Ledger 57500008's first record is a path payment from an account to itself.
    let ledger = fixtures::extract_pubnet(57500008);
    let record = &ledger.payments[0];
    assert_eq!(
        record.destination().map(|d| d.account),
        Some(record.source.account)
    );
    let participants = record.participants();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].role, Role::Both);
}
