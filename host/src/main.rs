//! The `airlock` command: run the gateway, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock::config::{ConfigSource, QUICKSTART};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Airlock: an API gateway whose every policy phase runs in a sandboxed WebAssembly component.
#[derive(Parser)]
#[command(name = "airlock", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "airlock.toml", conflicts_with = "quickstart")]
        config: PathBuf,
        /// Run the embedded quickstart config with the demo upstream on 127.0.0.1:9090.
        #[arg(long)]
        quickstart: bool,
        /// Also start the demo echo upstream on 127.0.0.1:9090 (for examples).
        #[arg(long)]
        demo_upstream: bool,
    },
    /// Validate a config: parse it, load and configure every plugin, and report every problem.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "airlock.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check { config } => check(config).await,
            Command::Run { config, quickstart, demo_upstream } => run(config, quickstart, demo_upstream).await,
        }
    })
}

async fn check(path: PathBuf) -> ExitCode {
    let source = match ConfigSource::read(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match airlock::load(&source).await {
        Ok((config, gateway)) => {
            let plugins: usize = gateway.routes.routes().iter().map(|r| r.chain.entries().len()).sum();
            println!(
                "{}: ok ({} routes, {} upstreams, {} chain entries)",
                source.name,
                config.routes.len(),
                config.upstreams.len(),
                plugins
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, quickstart: bool, demo_upstream: bool) -> ExitCode {
    if quickstart || demo_upstream {
        let upstream = airlock::demo_upstream::DEMO_UPSTREAM_ADDR;
        match airlock::demo_upstream::spawn(upstream).await {
            Ok(addr) => tracing::info!(%addr, "demo upstream listening"),
            Err(e) => {
                eprintln!("error: cannot start the demo upstream on {upstream}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let source = if quickstart {
        ConfigSource::inline("quickstart/airlock.toml", QUICKSTART, std::env::current_dir().unwrap_or_default())
    } else {
        match ConfigSource::read(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let running = match airlock::start(&source).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in running.addrs() {
        tracing::info!(%addr, config = %source.name, "airlock listening");
    }
    if let Some(addr) = running.admin_addr() {
        tracing::info!(%addr, "admin listener (health, ready, metrics, admin API)");
    }
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, draining in-flight requests (signal again to force)");
    tokio::select! {
        _ = running.shutdown() => tracing::info!("stopped"),
        _ = wait_for_signal() => tracing::warn!("second signal: exiting now"),
    }
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
