//! `dermedge`, the command line over the dermedge library: it parses the arguments, prints what
//! the library returns, and turns the outcome into the process's exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dermedge: {error}");
            ExitCode::from(cli::EXIT_CONFIG)
        }
    }
}
