//! The `sipfront` binary: the CLI (`serve`, `user`, `rules`, `contacts`, `archive`, `db`...)
//! on jemalloc. Everything it does lives in the library.

use clap::Parser;

/// jemalloc rather than the system allocator: it hands memory back to the kernel after a burst
/// (completed transactions are held for 32 s and then freed in bulk) and scales across threads.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match sipfront::cli::run(sipfront::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            eprintln!("sipfront: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
