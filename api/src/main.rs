//! `marketplace`: the one binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = api::config::load_config_file(&args) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    match api::cli::run(api::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
