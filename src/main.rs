//! The `mqgate` command: parses the command line and runs one of
//! [`mqgate::cli`]'s commands.

use clap::{Parser, Subcommand};
use mqgate::cli;
use std::process::ExitCode;

// The RPC path allocates many small strings per call (parameters, the
// canonical string, the answer); mimalloc serves them faster than glibc's
// malloc, which took about 15% of the CPU in a profile of the path.
// The `system-alloc` feature leaves glibc's malloc in place, for heap
// profilers that hook malloc (heaptrack; bench/memory_breakdown.sh).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mqgate",
    version,
    about = "ApsaraMQ for MQTT OpenAPI in front of an embedded MQTT broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config: a demo on loopback.
    Serve(cli::serve::Args),
    /// Make one signed call to a running mqgate (or any OnsMqtt endpoint)
    /// and print the answer. Exits 1 if the answer is an error.
    Call(cli::call::Args),
    /// Billing report from the metering database (works while mqgate runs).
    Report(cli::report::Args),
    /// Check and try RAM policies without a running gateway.
    #[command(subcommand)]
    Policy(cli::policy::Command),
    /// Write a self-signed CA and a server certificate it signed, for
    /// trying MQTT over TLS, secure WebSocket and HTTPS.
    Cert(cli::cert::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Policy(command) => cli::policy::run(command),
        Command::Report(args) => cli::report::run(args),
        Command::Cert(args) => cli::cert::run(args),
        Command::Serve(args) => with_runtime(cli::serve::run(args)),
        Command::Call(args) => with_runtime(cli::call::run(args)),
    }
}

/// Runs `command` on a multi-threaded runtime. Nothing of rumqttd's runs on
/// it (the brokers have a runtime of their own), so it stops as soon as the
/// command's own tasks have.
fn with_runtime(command: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => {
            eprintln!("mqgate: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
