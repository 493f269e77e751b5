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
    raise_open_files_limit();
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

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// does: a gateway holds two sockets a request, and systemd's default soft
/// limit (1 024, under a hard limit of 524 288) runs out at a few hundred
/// clients — then accepts fail and upstream connects with them.
#[expect(unsafe_code, reason = "getrlimit and setrlimit: libc calls on a plain struct")]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    // Linux caps the hard limit at `fs.nr_open`; a soft limit past a
    // million would only make a larger descriptor table.
    let want = limit.rlim_max.min(1 << 20);
    if limit.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit, read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(from = limit.rlim_cur, to = want, "raised the open files limit");
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
