//! Every pubnet fixture ledger reproduces the counts an independent decoder (the Python
//! stellar-sdk) computed for it in `ledgers/pubnet/SUMMARY.json`.

use std::collections::BTreeMap;

use serde_json::Value;
use shared::testkit::fixtures;
use shared::PaymentType;

fn by_type_name(counts: &BTreeMap<PaymentType, u32>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .map(|(t, n)| (t.as_str().to_owned(), u64::from(*n)))
        .collect()
}

fn as_counts(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .expect("object of counts")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect()
}

#[test]
fn all_pubnet_ledgers_match_the_summary() {
    let text = std::fs::read_to_string(fixtures::dir().join("ledgers/pubnet/SUMMARY.json"))
        .expect("SUMMARY.json");
    let summary: Value = serde_json::from_str(&text).expect("valid JSON");
    for seq in fixtures::PUBNET_LEDGERS {
        let expected = &summary[seq.to_string()];
        let got = fixtures::extract_pubnet(seq);
        let stats = &got.stats;
        assert_eq!(got.ledger.sequence, seq);
        assert_eq!(
            u64::from(got.ledger.meta_version),
            expected["lcm_version"].as_u64().expect("v"),
            "{seq}"
        );
        assert_eq!(
            u64::from(got.ledger.protocol_version),
            expected["protocol"].as_u64().expect("p"),
            "{seq}"
        );
        assert_eq!(
            u64::from(stats.transactions),
            expected["txs"].as_u64().expect("txs"),
            "{seq}"
        );
        assert_eq!(
            u64::from(stats.successful_transactions),
            expected["successful_txs"].as_u64().expect("ok"),
            "{seq}"
        );
        assert_eq!(
            by_type_name(&stats.payment_ops_successful),
            as_counts(&expected["payment_ops_successful"]),
            "{seq} successful"
        );
        assert_eq!(
            by_type_name(&stats.payment_ops_failed),
            as_counts(&expected["payment_ops_failed"]),
            "{seq} failed"
        );
        assert_eq!(
            u64::from(stats.transfer_events_successful),
            expected["transfer_events_in_successful_txs"]
                .as_u64()
                .expect("transfers"),
            "{seq} transfer events"
        );
        let sac: BTreeMap<String, u64> = stats
            .sac_events_successful
            .iter()
            .map(|(k, v)| ((*k).to_owned(), u64::from(*v)))
            .collect();
        assert_eq!(
            sac,
            as_counts(&expected["sac_events_in_successful_txs"]),
            "{seq} SAC events"
        );
        assert_eq!(
            u64::from(stats.invoke_host_function_payments),
            expected["invoke_host_function_with_sac_events_successful"]
                .as_u64()
                .expect("n"),
            "{seq} invoke payments"
        );

        // The records themselves: every classic payment-type operation, failed ones too,
        // and the invocations that moved SAC balances.
        let mut records: BTreeMap<(PaymentType, bool), u32> = BTreeMap::new();
        for p in &got.payments {
            *records
                .entry((p.payment_type(), p.successful()))
                .or_default() += 1;
        }
        for (ty, n) in &stats.payment_ops_successful {
            let want = if *ty == PaymentType::InvokeHostFunction {
                stats.invoke_host_function_payments
            } else {
                *n
            };
            assert_eq!(
                records.get(&(*ty, true)).copied().unwrap_or(0),
                want,
                "{seq} {ty:?} records"
            );
        }
        for (ty, n) in &stats.payment_ops_failed {
            let want = if *ty == PaymentType::InvokeHostFunction {
                0
            } else {
                *n
            };
            assert_eq!(
                records.get(&(*ty, false)).copied().unwrap_or(0),
                want,
                "{seq} failed {ty:?} records"
            );
        }
        // Ids strictly increase: records come out in chain order.
        assert!(
            got.payments.windows(2).all(|w| w[0].id < w[1].id),
            "{seq} ids ordered"
        );
    }
}
