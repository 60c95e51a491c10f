use clap::Parser;

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
