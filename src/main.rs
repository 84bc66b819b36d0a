//! Wiring only: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use kubiya_operator::config::{Cli, Command};
use kubiya_operator::{commands, runtime};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Crd { file }) => return commands::crd(file.as_deref()),
        Some(Command::Export(args)) => return commands::export(args).await,
        Some(Command::Run(config)) => config,
        None => cli.run,
    };
    runtime::telemetry::init(config.log_format);
    match runtime::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", kubiya_operator::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
