//! `writer extract` over every input format, run as the real binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    shared::testkit::fixtures::dir()
}

fn extract(files: &[&Path]) -> (bool, Vec<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_writer"))
        .arg("extract")
        .args(files)
        .output()
        .expect("runs");
    let lines = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (
        output.status.success(),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("writer-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

#[test]
fn prints_horizon_records_for_every_format() {
    let gz = fixtures().join("ledgers/pubnet/ledger-30820015.xdr.gz");
    let (ok, records, _) = extract(&[&gz]);
    assert!(ok);
    assert_eq!(
        records.len(),
        14,
        "14 payment-type operations, failed ones included"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["transaction_successful"] == true)
            .count(),
        1
    );
    for r in &records {
        for field in [
            "id",
            "paging_token",
            "type",
            "type_i",
            "created_at",
            "transaction_hash",
            "source_account",
        ] {
            assert!(!r[field].is_null(), "{field} in {r}");
        }
    }

    // The same ledger as raw XDR and as a base64 line gives the same records.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).expect("open"))
        .read_to_end(&mut raw)
        .expect("gunzip");
    let raw_path = scratch("ledger.xdr");
    std::fs::write(&raw_path, &raw).expect("write");
    use base64::Engine as _;
    let b64_path = scratch("ledgers.txt");
    std::fs::write(
        &b64_path,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        ),
    )
    .expect("write");
    assert_eq!(extract(&[&raw_path]).1, records);
    assert_eq!(extract(&[&b64_path]).1, records);

    // Data lake, early ledgers (gzipped base64 lines), and several files at once.
    let lake = fixtures().join("datalake/pubnet/FCD285FF--53312000.xdr.zstd");
    let early = fixtures().join("ledgers/pubnet-early/ledgers-base64.txt.gz");
    let (ok, lake_records, _) = extract(&[&lake]);
    assert!(ok && !lake_records.is_empty());
    let (ok, early_records, _) = extract(&[&early]);
    assert!(ok && !early_records.is_empty());
    let (ok, all, _) = extract(&[&gz, &lake, &early]);
    assert!(ok);
    assert_eq!(
        all.len(),
        records.len() + lake_records.len() + early_records.len()
    );
}

#[test]
fn bad_files_fail_with_the_file_named() {
    let bad = scratch("broken.xdr");
    std::fs::write(&bad, b"\x00\x00\x00\x02garbage").expect("write");
    let (ok, records, stderr) = extract(&[&bad]);
    assert!(!ok);
    assert!(records.is_empty());
    assert!(
        stderr.contains("broken.xdr") && stderr.contains("malformed"),
        "{stderr}"
    );
}
