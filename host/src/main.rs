//! The `wasmgate` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, about = "An API gateway whose policies are WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with this config; SIGHUP (or a change to the file) reloads it.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Load the config and its plugins exactly as `run` would, then exit.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match wasmgate::gateway::check(&config) {
            Ok(snapshot) => {
                let plugins: Vec<&str> = snapshot.plugins.keys().map(String::as_str).collect();
                println!(
                    "{}: ok ({} routes, {} upstreams, plugins: {})",
                    config.display(),
                    snapshot.routes.len(),
                    snapshot.upstreams.len(),
                    if plugins.is_empty() { "none".to_owned() } else { plugins.join(", ") }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => run(config),
    }
}

fn run(config: PathBuf) -> ExitCode {
    match wasmgate::gateway::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ wasmgate::gateway::StartError::Signals(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WASMGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only on a terminal: log files should not fill with escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
