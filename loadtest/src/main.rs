//! The load tester: Stellar RPC simulator, synthetic ledgers, HTTP load and benchmarks.

use std::process::ExitCode;

use clap::Parser;

// Decoding ledgers allocates millions of small objects; mimalloc makes that markedly
// cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = loadtest::cli::Cli::parse();
    match loadtest::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
