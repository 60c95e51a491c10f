//! sipfront's own command line, built from the server library (a dev-dependency), so that the
//! `--provision` tests run the real `sipfront user import` without building another package:
//! `cargo test -p sipfront-loadtest` builds it as target/<profile>/examples/sipfront-cli.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match sipfront::cli::run(sipfront::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipfront: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
