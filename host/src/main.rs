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
    let gateway = match wasmgate::Gateway::start(&config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the control runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = gateway.shared().clone();
    let outcome = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    let shared = shared.clone();
                    // Compiling plugins can take a while; keep signals responsive.
                    let _ = tokio::task::spawn_blocking(move || shared.reload_or_log()).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok::<_, std::io::Error>(())
    });
    if let Err(e) = outcome {
        eprintln!("cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown();
    ExitCode::SUCCESS
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
