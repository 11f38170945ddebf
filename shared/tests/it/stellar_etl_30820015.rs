//! Ledger 30820015 against what stellar-etl exported for it: every payment-type
//! operation (failed ones included) with its id, type, accounts, amounts, assets, source
//! amounts and path; and the transfer in its token-transfer (CAP-67) export.

use std::collections::BTreeMap;

use serde_json::Value;
use shared::horizon::{payment_json, LinkBase};
use shared::testkit::fixtures;
use shared::PaymentRecord;

const PAYMENT_TYPES: [&str; 6] = [
    "create_account",
    "payment",
    "path_payment_strict_receive",
    "path_payment_strict_send",
    "account_merge",
    "invoke_host_function",
];

fn jsonl(name: &str) -> Vec<Value> {
    let path = fixtures::dir().join("expected/30820015").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// stellar-etl writes amounts as JSON numbers of units (or as 7-place strings); both
/// become stroops here. Pubnet amounts stay well inside f64's exact range for 7 places.
fn stroops(value: &Value) -> i64 {
    match value {
        Value::String(s) => shared::amount::parse_stroops(s).expect("decimal") as i64,
        Value::Number(n) => (n.as_f64().expect("number") * 1e7).round() as i64,
        other => panic!("not an amount: {other}"),
    }
}

fn rendered_amount(record: &Value, field: &str) -> i64 {
    stroops(&record[field])
}

fn assert_asset(expected: &Value, rendered: &Value, prefix: &str, context: &str) {
    let field = |name: &str| format!("{prefix}{name}");
    assert_eq!(
        rendered[field("asset_type")],
        expected[field("asset_type")],
        "{context} {prefix}asset_type"
    );
    for name in ["asset_code", "asset_issuer"] {
        let want = expected.get(field(name)).cloned().unwrap_or(Value::Null);
        let got = rendered.get(field(name)).cloned().unwrap_or(Value::Null);
        assert_eq!(got, want, "{context} {prefix}{name}");
    }
}

#[test]
fn payment_operations_equal_the_stellar_etl_export() {
    let ledger = fixtures::extract_pubnet(30820015);
    let ours: BTreeMap<i64, &PaymentRecord> =
        ledger.payments.iter().map(|p| (p.id.to_i64(), p)).collect();
    let expected: Vec<Value> = jsonl("operations.jsonl")
        .into_iter()
        .filter(|op| PAYMENT_TYPES.contains(&op["type_string"].as_str().expect("type")))
        .collect();
    assert_eq!(
        expected.len(),
        14,
        "the export holds 14 payment-type operations"
    );
    let expected_ids: Vec<i64> = expected
        .iter()
        .map(|op| op["id"].as_i64().expect("id"))
        .collect();
    let mut sorted_ids = expected_ids.clone();
    sorted_ids.sort_unstable();
    assert_eq!(
        ours.keys().copied().collect::<Vec<_>>(),
        sorted_ids,
        "same operations, same ids"
    );

    let links = LinkBase::default();
    for op in &expected {
        let id = op["id"].as_i64().expect("id");
        let record = ours[&id];
        let json = payment_json(record, &links, false);
        let context = format!("operation {id}");
        let details = &op["details"];
        assert_eq!(json["id"], Value::String(id.to_string()), "{context}");
        assert_eq!(
            json["paging_token"],
            Value::String(id.to_string()),
            "{context}"
        );
        assert_eq!(json["type"], op["type_string"], "{context}");
        assert_eq!(json["type_i"], op["type"], "{context}");
        assert_eq!(json["source_account"], op["source_account"], "{context}");
        assert_eq!(
            record.transaction.id.to_i64(),
            op["transaction_id"].as_i64().expect("tx id"),
            "{context} transaction id"
        );
        assert_eq!(json["created_at"], op["closed_at"], "{context}");
        assert_eq!(json["from"], details["from"], "{context} from");
        assert_eq!(json["to"], details["to"], "{context} to");
        assert_eq!(
            rendered_amount(&json, "amount"),
            stroops(&details["amount"]),
            "{context} amount"
        );
        assert_asset(details, &json, "", &context);
        if op["type_string"] == "path_payment_strict_receive"
            || op["type_string"] == "path_payment_strict_send"
        {
            assert_eq!(
                rendered_amount(&json, "source_amount"),
                stroops(&details["source_amount"]),
                "{context} source_amount"
            );
            let limit = if op["type_string"] == "path_payment_strict_receive" {
                "source_max"
            } else {
                "destination_min"
            };
            assert_eq!(
                rendered_amount(&json, limit),
                stroops(&details[limit]),
                "{context} {limit}"
            );
            assert_asset(details, &json, "source_", &context);
            let path = json["path"].as_array().expect("path");
            let want = details["path"].as_array().expect("path");
            assert_eq!(path.len(), want.len(), "{context} path length");
            for (got, want) in path.iter().zip(want) {
                assert_asset(want, got, "", &context);
            }
        }
        assert_eq!(
            json["transaction_successful"],
            Value::Bool(
                op["operation_result_code"] == "OperationResultCodeOpInner"
                    && record.transaction.successful
            ),
            "{context} success"
        );
    }
    // The export lists one successful payment; all others are failed.
    assert_eq!(ledger.payments.iter().filter(|p| p.successful()).count(), 1);
}

#[test]
fn transfers_agree_with_the_token_transfer_export() {
    let ledger = fixtures::extract_pubnet(30820015);
    let transfers: Vec<Value> = jsonl("token_transfers.jsonl")
        .into_iter()
        .filter(|t| t["event_topic"] != "fee")
        .collect();
    assert!(!transfers.is_empty());
    for transfer in transfers {
        let op_id = transfer["operation_id"].as_i64().expect("operation id");
        let record = ledger
            .payments
            .iter()
            .find(|p| p.id.to_i64() == op_id)
            .expect("record for the transfer");
        let json = payment_json(record, &LinkBase::default(), false);
        assert_eq!(json["transaction_hash"], transfer["transaction_hash"]);
        assert_eq!(json["from"], transfer["from"]);
        assert_eq!(json["to"], transfer["to"]);
        // CAP-67 reports an ID memo as the destination's muxed id; the operation itself
        // names a plain account, which is what Horizon shows in `to`.
        match (&json["to_muxed_id"], &transfer["to_muxed_id"]) {
            (Value::Null, Value::String(id)) => {
                assert_eq!(
                    record.transaction.memo,
                    shared::payment::Memo::Id(id.parse().expect("u64"))
                );
            }
            (ours, theirs) => assert_eq!(ours, theirs),
        }
        let raw: i64 = transfer["amount_raw"]
            .as_str()
            .expect("raw")
            .parse()
            .expect("stroops");
        assert_eq!(rendered_amount(&json, "amount"), raw);
        assert_eq!(json["asset_type"], transfer["asset_type"]);
        // And the path payments of the ledger failed: they moved nothing.
        for p in ledger
            .payments
            .iter()
            .filter(|p| p.payment_type() == shared::PaymentType::PathPaymentStrictReceive)
        {
            assert!(!p.successful());
            let json = payment_json(p, &LinkBase::default(), false);
            assert_eq!(json["source_amount"], "0.0000000");
        }
    }
}
