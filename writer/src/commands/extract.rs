//! `writer extract`: ledger files in, Horizon payment records out as JSON lines.

use std::io::{BufWriter, Write};

use anyhow::Context as _;
use shared::horizon::{payment_json, LinkBase};
use shared::ledger_file::read_ledger_file;
use shared::Extractor;

use crate::cli::ExtractArgs;

/// Prints every payment of every ledger of `args.files` to standard output.
pub fn run(args: &ExtractArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    match write_payments(args, &mut BufWriter::new(stdout.lock())) {
        // A closed pipe (`writer extract ... | head`) is the reader's choice, not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Writes the JSON lines for `args.files` to `out`.
pub fn write_payments(args: &ExtractArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut extractor = Extractor::new(args.network.network());
    let links = LinkBase(args.base_url.clone());
    for path in &args.files {
        let ledgers = read_ledger_file(path)?;
        for meta in &ledgers {
            let payments = extractor
                .extract(meta)
                .with_context(|| format!("{}", path.display()))?;
            for record in &payments.payments {
                serde_json::to_writer(
                    &mut *out,
                    &payment_json(record, &links, args.join_transactions),
                )?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                .is_some_and(|kind| kind == std::io::ErrorKind::BrokenPipe)
    })
}
