//! The `flashgate` binary: parse the command line, set up logging, load the config, run.
//! Everything else lives in the library (`flashgate::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flashgate::config::{process_env, Config};

#[derive(Parser)]
#[command(name = "flashgate", version, about = "A flash-sale (seckill) gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Validate the gateway and campaign files, print a summary; exit 1 on error.
    Check {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn summary(cfg: &Config) {
    println!("config OK: {}", cfg.path.display());
    println!(
        "  public {}  admin {}  redis {}  upstream {}",
        cfg.server.listen, cfg.server.admin_listen, cfg.redis.url, cfg.upstream.url
    );
    println!("  campaigns: {}", cfg.campaigns.len());
    for c in &cfg.campaigns {
        println!(
            "  - {} ({}): {} .. {}, payment window {}, per-user limit {}",
            c.id,
            c.name,
            c.starts_at,
            c.ends_at,
            humantime::format_duration(c.payment_window),
            c.per_user_limit
        );
        for i in &c.items {
            println!(
                "      {:<32} stock {:>8}  price_cents {:>10}",
                i.sku, i.stock, i.price_cents
            );
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let (Command::Serve { config } | Command::Check { config }) = &cli.command;
    let cfg = match Config::load(config, &process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return match cli.command {
                Command::Check { .. } => ExitCode::from(1),
                Command::Serve { .. } => ExitCode::from(64),
            };
        }
    };
    match cli.command {
        Command::Check { .. } => {
            summary(&cfg);
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(flashgate::run(cfg, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
