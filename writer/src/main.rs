//! The writer: the only process that writes payments into Postgres.

use std::process::ExitCode;

use clap::Parser;

// Decoding ledgers allocates millions of small objects; mimalloc makes that markedly
// cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = writer::cli::Cli::parse();
    match writer::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
