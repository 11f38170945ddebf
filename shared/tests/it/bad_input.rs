//! Bad input never panics: random bytes, truncations and bit flips of the real fixtures,
//! and hand-made inconsistencies each end in a typed error that names the ledger and,
//! where it applies, the transaction.

use proptest::prelude::*;
use shared::ledger_file::read_ledger_file;
use shared::testkit::fixtures;
use shared::{ExtractErrorKind, Extractor, Network};
use stellar_xdr::{
    ClaimAtom, LedgerCloseMeta, Limits, OperationResult, OperationResultTr,
    PathPaymentStrictReceiveResult, TransactionResultResult, WriteXdr,
};

fn fixture(seq: u32) -> LedgerCloseMeta {
    read_ledger_file(&fixtures::pubnet_ledger_path(seq))
        .expect("fixture")
        .remove(0)
}

fn fixture_bytes(seq: u32) -> Vec<u8> {
    fixture(seq).to_xdr(Limits::none()).expect("encode")
}

fn processing_results(meta: &mut LedgerCloseMeta) -> Vec<&mut stellar_xdr::TransactionResultPair> {
    match meta {
        LedgerCloseMeta::V0(m) => m.tx_processing.iter_mut().map(|p| &mut p.result).collect(),
        LedgerCloseMeta::V1(m) => m.tx_processing.iter_mut().map(|p| &mut p.result).collect(),
        LedgerCloseMeta::V2(m) => m.tx_processing.iter_mut().map(|p| &mut p.result).collect(),
    }
}

/// Applies `tamper` to successful transactions' operation results until it reports a
/// change; returns whether one was made.
fn tamper_op_results(
    meta: &mut LedgerCloseMeta,
    mut tamper: impl FnMut(&mut OperationResult) -> bool,
) -> bool {
    for pair in processing_results(meta) {
        let TransactionResultResult::TxSuccess(results) = &mut pair.result.result else {
            continue;
        };
        let mut list = results.to_vec();
        if list.iter_mut().any(&mut tamper) {
            *results = list.try_into().expect("same length");
            return true;
        }
    }
    false
}

#[test]
fn truncations_of_every_fixture_fail_cleanly() {
    let mut extractor = Extractor::new(Network::pubnet());
    for seq in fixtures::PUBNET_LEDGERS {
        let bytes = fixture_bytes(seq);
        assert!(extractor.extract_xdr(&bytes).is_ok());
        // Every cut in the header region, then about a hundred spread over the rest.
        let step = (bytes.len() / 100).max(1);
        let cuts = (0..bytes.len().min(512)).chain((512..bytes.len()).step_by(step));
        for cut in cuts {
            let err = extractor
                .extract_xdr(&bytes[..cut])
                .expect_err("truncated input must fail");
            assert!(
                matches!(err.kind, ExtractErrorKind::Decode(_)),
                "cut {cut}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 0, 0, 0]);
        let err = extractor.extract_xdr(&longer).expect_err("trailing bytes");
        assert!(
            matches!(err.kind, ExtractErrorKind::TrailingBytes(4)),
            "{err}"
        );
    }
}

#[test]
fn unknown_future_meta_version_is_a_decode_error() {
    let mut bytes = fixture_bytes(63092996);
    bytes[3] = 3; // LedgerCloseMeta V3 does not exist (yet)
    let err = Extractor::new(Network::pubnet())
        .extract_xdr(&bytes)
        .expect_err("unknown variant");
    assert!(matches!(err.kind, ExtractErrorKind::Decode(_)), "{err}");
    assert_eq!(err.label(), "decode");
}

#[test]
fn result_without_envelope_names_ledger_and_transaction() {
    let mut meta = fixture(30820015);
    // Swap in a hash the transaction set does not hold.
    let results = processing_results(&mut meta);
    let pair = results.into_iter().nth(4).expect("5th transaction");
    pair.transaction_hash = stellar_xdr::Hash([7; 32]);
    let err = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect_err("missing envelope");
    assert!(
        matches!(err.kind, ExtractErrorKind::MissingEnvelope),
        "{err}"
    );
    assert_eq!(err.ledger, Some(30820015));
    assert_eq!(err.transaction.map(|t| t.order), Some(5));
    assert!(
        err.to_string()
            .starts_with("ledger 30820015, transaction #5 (0707"),
        "{err}"
    );
}

#[test]
fn dropped_envelope_is_a_count_mismatch() {
    let mut meta = fixture(30820015);
    if let LedgerCloseMeta::V0(m) = &mut meta {
        let mut txs = m.tx_set.txs.to_vec();
        txs.pop();
        m.tx_set.txs = txs.try_into().expect("fits");
    }
    let err = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect_err("count mismatch");
    assert!(
        matches!(
            err.kind,
            ExtractErrorKind::CountMismatch {
                envelopes: 58,
                results: 59
            }
        ),
        "{err}"
    );
}

#[test]
fn overflowing_path_payment_amounts_are_refused() {
    let mut meta = fixture(57500008);
    let tampered = tamper_op_results(&mut meta, |result| {
        let OperationResult::OpInner(OperationResultTr::PathPaymentStrictReceive(
            PathPaymentStrictReceiveResult::Success(success),
        )) = result
        else {
            return false;
        };
        let mut offers = success.offers.to_vec();
        let Some(first) = offers.first() else {
            return false;
        };
        // Two first-hop offers each claiming i64::MAX bought: their sum overflows.
        let mut huge = first.clone();
        match &mut huge {
            ClaimAtom::V0(a) => a.amount_bought = i64::MAX,
            ClaimAtom::OrderBook(a) => a.amount_bought = i64::MAX,
            ClaimAtom::LiquidityPool(a) => a.amount_bought = i64::MAX,
        }
        offers.insert(0, huge.clone());
        offers.insert(0, huge);
        success.offers = offers.try_into().expect("fits");
        true
    });
    assert!(
        tampered,
        "the fixture has a successful strict-receive path payment"
    );
    let err = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect_err("overflow");
    assert!(
        matches!(err.kind, ExtractErrorKind::AmountOverflow { .. }),
        "{err}"
    );
    assert!(err.transaction.is_some());
}

#[test]
fn result_of_the_wrong_kind_is_inconsistent() {
    let mut meta = fixture(51000294);
    let tampered = tamper_op_results(&mut meta, |result| {
        if !matches!(
            result,
            OperationResult::OpInner(OperationResultTr::PathPaymentStrictReceive(_))
        ) {
            return false;
        }
        *result = OperationResult::OpInner(OperationResultTr::Inflation(
            stellar_xdr::InflationResult::NotTime,
        ));
        true
    });
    assert!(tampered);
    let err = Extractor::new(Network::pubnet())
        .extract(&meta)
        .expect_err("inconsistent");
    assert!(
        matches!(err.kind, ExtractErrorKind::InconsistentResult { .. }),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Extractor::new(Network::pubnet()).extract_xdr(&bytes);
    }

    #[test]
    fn plausible_prefixes_never_panic(version in 0u8..4, tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut bytes = vec![0, 0, 0, version];
        bytes.extend(tail);
        let _ = Extractor::new(Network::pubnet()).extract_xdr(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Flipped bits in a real ledger: decoding may fail or succeed with odd values, and
    /// extraction of whatever decodes must end in records or a typed error, never a panic.
    #[test]
    fn bit_flips_in_real_ledgers_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
    ) {
        thread_local! {
            static FIXTURES: Vec<Vec<u8>> = fixtures::PUBNET_LEDGERS.iter().map(|s| fixture_bytes(*s)).collect();
        }
        let mut bytes = FIXTURES.with(|f| f[which].clone());
        for (index, bit) in flips {
            let i = index.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        if let Err(err) = Extractor::new(Network::pubnet()).extract_xdr(&bytes) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}

/// A data-lake batch header is 12 bytes (first ledger, last ledger, ledger count) and
/// nothing in it can be trusted: one that declares four billion ledgers, bare or followed
/// by one real ledger, is refused with a decode error instead of reserving memory for
/// the count (which would abort the process).
#[test]
fn hostile_batch_headers_reserve_nothing_and_fail_cleanly() {
    let ledger = fixture_bytes(fixtures::PUBNET_LEDGERS[0]);
    let seq = shared::ledger_file::ledger_seq(&fixture(fixtures::PUBNET_LEDGERS[0]));
    let headers: Vec<Vec<u8>> = vec![
        // start 1, end u32::MAX: u32::MAX ledgers declared, none present.
        [1u32, u32::MAX, u32::MAX]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect(),
        // The real first ledger, then nothing of the other four billion.
        [seq, u32::MAX, u32::MAX - seq + 1]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .chain(ledger.iter().copied())
            .collect(),
    ];
    for bytes in headers {
        let mut extractor = Extractor::new(Network::pubnet());
        let error = extractor
            .extract_batch_xdr(&bytes)
            .expect_err("a batch short of its declared ledgers is refused");
        assert!(matches!(error.kind, ExtractErrorKind::Decode(_)), "{error}");
        // The same batch as a data-lake file: the full decoder refuses it too.
        let compressed = zstd::encode_all(bytes.as_slice(), 1).expect("zstd");
        let refused = shared::ledger_file::read_ledger_bytes(
            std::path::Path::new("FFFFFFFF--0.xdr.zstd"),
            &compressed,
        );
        assert!(refused.is_err(), "hostile batch file accepted");
    }
}
