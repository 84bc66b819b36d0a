//! Wiring only: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use kubiya_operator::config::{Cli, Command};
use kubiya_operator::{resource, runtime};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Crd { file }) => return print_crds(file.as_deref()),
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

/// Prints every CRD (or the one shipped as `crds/<file>`), as multi-document YAML.
fn print_crds(file: Option<&str>) -> ExitCode {
    let crds = resource::crds().into_iter().filter(|(f, _)| file.is_none_or(|want| *f == want));
    let mut printed = 0;
    for (_, crd) in crds {
        match resource::crd_yaml(&crd) {
            Ok(yaml) => print!("{}{yaml}", if printed > 0 { "---\n" } else { "" }),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        printed += 1;
    }
    if printed == 0 {
        eprintln!("error: no CRD is shipped as {file:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
