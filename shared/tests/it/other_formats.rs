//! The early-protocol ledgers (base64 lines, meta V1/V2, no events) and the data-lake
//! batch (zstd `LedgerCloseMetaBatch`, meta V3) decode and extract without error.

use shared::ledger_file::{read_ledger_file, read_ledger_xdr};
use shared::testkit::fixtures;
use shared::{Extractor, Network};

#[test]
fn early_protocol_ledgers_extract() {
    let path = fixtures::dir().join("ledgers/pubnet-early/ledgers-base64.txt.gz");
    let ledgers = read_ledger_file(&path).expect("read");
    let mut extractor = Extractor::new(Network::pubnet());
    let mut seen = Vec::new();
    for meta in &ledgers {
        let out = extractor.extract(meta).expect("extracts");
        assert_eq!(out.ledger.meta_version, 0);
        seen.push((out.ledger.sequence, out.stats.transactions));
        // Old ledgers have no events, so no invoke payments, and every record's
        // transaction context is consistent with the record.
        for p in &out.payments {
            assert_eq!(p.transaction.ledger_seq, out.ledger.sequence);
            assert_eq!(p.id.transaction(), p.transaction.id);
        }
    }
    // The file is not in ledger order; compare (sequence, transactions) sorted.
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            (6154623, 0),
            (16154623, 2),
            (26154623, 19),
            (36154623, 190),
            (46154623, 212)
        ]
    );
    // The raw-XDR reader agrees with the decoder: one blob a line.
    assert_eq!(read_ledger_xdr(&path).expect("raw").len(), 5);
}

#[test]
fn data_lake_batch_extracts() {
    let path = fixtures::dir().join("datalake/pubnet/FCD285FF--53312000.xdr.zstd");
    let ledgers = read_ledger_file(&path).expect("read");
    assert_eq!(ledgers.len(), 1);
    let out = Extractor::new(Network::pubnet())
        .extract(&ledgers[0])
        .expect("extracts");
    assert_eq!(out.ledger.sequence, 53312000);
    assert_eq!(out.ledger.meta_version, 1);
    assert_eq!(out.ledger.protocol_version, 21);
    assert_eq!(out.stats.transactions, 163);
    assert!(!out.payments.is_empty());
    // Re-encoded raw XDR decodes to the same ledger.
    let raw = read_ledger_xdr(&path).expect("raw");
    let again = Extractor::new(Network::pubnet())
        .extract_xdr(&raw[0])
        .expect("extracts");
    assert_eq!(again.payments, out.payments);
}

#[test]
fn unreadable_files_are_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("ledger-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cases: [(&str, &[u8]); 4] = [
        ("bad.xdr", b"\x00\x00\x00\x01short"),
        ("bad.xdr.gz", b"\x1f\x8b\x08\x00broken gzip"),
        ("bad.txt", b"not base64 at all!\n"),
        ("bad.xdr.zstd", b"\x28\xb5\x2f\xfdbroken"),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = read_ledger_file(&path).expect_err(name);
        assert!(err.to_string().contains(name), "{err}");
    }
    assert!(read_ledger_file(&dir.join("missing.xdr")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn data_lake_directory_reads_through_the_fast_batch_path() {
    use shared::datalake::DataLake;
    // The fixture folder holds one batch file; give it the configuration an export has.
    let root = std::env::temp_dir().join(format!("datalake-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("tmp");
    let file = fixtures::dir().join("datalake/pubnet/FCD285FF--53312000.xdr.zstd");
    std::fs::copy(&file, root.join("FCD285FF--53312000.xdr.zstd")).expect("copy");
    std::fs::write(
        root.join(".config.json"),
        r#"{"networkPassphrase":"Public Global Stellar Network ; September 2015","compression":"zstd","ledgersPerFile":1,"filesPerPartition":1}"#,
    )
    .expect("config");
    let lake = DataLake::open(&root).expect("opens");
    assert_eq!(
        lake.available_range().expect("lists"),
        Some((53312000, 53312000))
    );
    let xdr = lake.read_batch_xdr(53312000).expect("reads");
    let fast = Extractor::new(Network::pubnet())
        .extract_batch_xdr(&xdr)
        .expect("extracts");
    let full = Extractor::new(Network::pubnet())
        .extract(&read_ledger_file(&file).expect("read")[0])
        .expect("extracts");
    assert_eq!(fast.len(), 1);
    assert_eq!(fast[0].payments, full.payments);
    assert!(matches!(
        lake.read_batch_xdr(53312001),
        Err(shared::datalake::DataLakeError::Missing(53312001))
    ));
    // A cut batch is an error, not a panic.
    assert!(Extractor::new(Network::pubnet())
        .extract_batch_xdr(&xdr[..xdr.len() / 2])
        .is_err());
    std::fs::remove_dir_all(&root).ok();
}
