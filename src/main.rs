//! Wiring only: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use kubiya_operator::config::{Cli, Command};
use kubiya_operator::{commands, runtime};

fn main() -> ExitCode {
    // Before the runtime's threads exist.
    malloc_settings();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(operator()),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn operator() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Crd { file }) => return commands::crd(file.as_deref()),
        Some(Command::Export(args)) => return commands::export(args).await,
        Some(Command::Run(config)) => config,
        None => cli.run,
    };
    runtime::telemetry::init(config.log_format);
    tokio::spawn(give_back_freed_memory());
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

/// glibc's malloc raises its mmap threshold each time a large block is freed, up to 32 MiB: after
/// the first answer near the client's 16 MiB cap, later ones come from heap arenas that are never
/// given back, and the answers budget bounds what is live but not what is resident (the operator
/// went past its 128 MiB limit in `make bench-hostile`; at a fixed threshold it stays near 55 MiB).
/// A fixed threshold keeps every block of 128 KiB and more in its own mapping, returned when freed.
///
/// And glibc gives each thread that contends for the heap an arena of its own, up to 8 per core,
/// each with its own free lists: at 10,000 Environments, the caches' small objects spread over
/// them cost 90.5 MiB resident; with two arenas, 70.6 MiB (one: 68.1 MiB), in the same time
/// (`hack/bench.sh --n 10000`). The operator waits on the network, not on malloc: two arenas
/// leave its worker threads a spare one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_settings() {
    // SAFETY: mallopt only sets malloc parameters; it is called first thing in main, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_settings() {}

/// What a burst of passes freed (an apply of thousands, a relist) stays resident in glibc's free
/// lists until something asks for it back: every 30 s, `malloc_trim` returns the free pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
async fn give_back_freed_memory() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        every.tick().await;
        // SAFETY: malloc_trim only releases memory malloc holds free; it is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
async fn give_back_freed_memory() {}
