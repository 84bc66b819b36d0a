//! `kubiya-cp-emulator`: the control-plane emulator on its own, for local runs and demos.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kubiya_cp_emulator::{Config, Emulator, Faults, FirstOutcome};

#[derive(Parser)]
#[command(
    name = "kubiya-cp-emulator",
    about = "Emulates the Kubiya control plane's Environments and worker-queue API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Address to listen on.
    #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:18778")]
    listen: SocketAddr,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, env = "EMULATOR_LATENCY_MS", default_value_t = 5)]
    latency_ms: u64,
    /// How long an organization's first environment stays `provisioning`, in milliseconds.
    #[arg(long, env = "EMULATOR_PROVISIONING_MS", default_value_t = 3000)]
    provisioning_ms: u64,
    /// Make the first environment end in `error` with this message instead of `ready`.
    #[arg(long, env = "EMULATOR_FIRST_ERROR")]
    first_error: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print an API key the emulator (and the real server) accepts for an organization.
    Token { organization: String },
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Token { organization }) = cli.command {
        println!("{}", kubiya_cp_emulator::token(&organization));
        return Ok(());
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = Config {
        faults: Faults { latency_ms: cli.latency_ms, ..Faults::default() },
        provisioning: Duration::from_millis(cli.provisioning_ms),
        first_outcome: cli.first_error.map_or(FirstOutcome::Ready, FirstOutcome::Error),
    };
    let emulator = Emulator::bind(config, cli.listen).await?;
    tracing::info!("control-plane emulator listening on {}", emulator.base_url());
    tokio::select! {
        _ = emulator.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
