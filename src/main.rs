//! The `flashgate` binary: parse the command line, set up logging, load the config, run.
//! Everything else lives in the library (`flashgate::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flashgate::config::{process_env, Config, ConfigError, SecretSource};
use time::format_description::well_known::Rfc3339;

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
        /// Do not read the secrets' environment variables (CI of campaign files); only
        /// check that the config names them.
        #[arg(long)]
        no_secrets: bool,
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
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: in a file or a log collector
        // they are noise, and a field value could not be told from an escape.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

/// The `check` summary; written with `write!` so a closed pipe (`| head`) is not a panic.
fn summary(cfg: &Config, no_secrets: bool) -> std::io::Result<()> {
    use std::io::Write;
    let rate = |r: &Option<flashgate::config::RateSpec>| match r {
        Some(r) => format!(
            "{}/{} burst {}",
            r.rate,
            humantime::format_duration(r.per.0),
            r.burst
        ),
        None => "none".into(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "config OK: {}", cfg.path.display())?;
    if no_secrets {
        writeln!(out, "  secrets not read (--no-secrets)")?;
    }
    writeln!(
        out,
        "  public {}  admin {}  redis {}  upstream {}  sink {}",
        cfg.server.listen,
        cfg.server.admin_listen,
        match (&cfg.redis.sentinel, cfg.redis.cluster_urls.is_empty()) {
            (Some(s), _) => format!("sentinel {:?} via {}", s.master, s.urls.join(",")),
            (None, true) => cfg.redis.url.clone(),
            (None, false) => format!("cluster {}", cfg.redis.cluster_urls.join(",")),
        },
        cfg.upstream.url,
        match cfg.orders.sink {
            flashgate::config::SinkKind::Http => "http",
            flashgate::config::SinkKind::Postgres => "postgres",
            flashgate::config::SinkKind::Rabbitmq => "rabbitmq",
        }
    )?;
    writeln!(
        out,
        "  limits: per_ip {}  per_user {}",
        rate(&cfg.limits.per_ip),
        rate(&cfg.limits.per_user)
    )?;
    writeln!(out, "  campaigns: {}", cfg.campaigns.len())?;
    for c in &cfg.campaigns {
        writeln!(
            out,
            "  - {} ({}): {} .. {}, payment window {}, per-user limit {}",
            c.id,
            c.name,
            rfc3339(c.starts_at),
            rfc3339(c.ends_at),
            humantime::format_duration(c.payment_window),
            c.per_user_limit
        )?;
        match c.admission {
            flashgate::config::Admission::FirstCome => {}
            flashgate::config::Admission::Raffle {
                entries_open,
                claim_window,
            } => writeln!(
                out,
                "      admission: raffle, entries from {}, claim window {}",
                rfc3339(entries_open),
                humantime::format_duration(claim_window)
            )?,
            flashgate::config::Admission::InstantDraw { win_probability } => writeln!(
                out,
                "      admission: instant draw, win probability {win_probability}"
            )?,
        }
        if c.limits.per_ip.is_some() || c.limits.per_user.is_some() {
            writeln!(
                out,
                "      limits: per_ip {}  per_user {}",
                rate(&c.limits.per_ip),
                rate(&c.limits.per_user)
            )?;
        }
        for i in &c.items {
            writeln!(
                out,
                "      {:<32} stock {:>8}  price_cents {:>10}",
                i.sku, i.stock, i.price_cents
            )?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Prints every problem, one `error: file:line:col: ...` line each, and a count.
fn print_problems(errors: &[ConfigError], warnings: &[ConfigError]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    for e in errors {
        eprintln!("error: {e}");
    }
    if errors.len() > 1 {
        eprintln!("{} errors", errors.len());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config, no_secrets } => {
            let secrets = if no_secrets {
                SecretSource::Skip
            } else {
                SecretSource::Env(&process_env)
            };
            let report = Config::check(&config, secrets);
            match &report.config {
                Ok(cfg) => {
                    print_problems(&[], &report.warnings);
                    let _ = summary(cfg, no_secrets);
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    print_problems(errors, &report.warnings);
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve { config } => {
            let report = Config::check(&config, SecretSource::Env(&process_env));
            let cfg = match report.config {
                Ok(cfg) => cfg,
                Err(errors) => {
                    print_problems(&errors, &report.warnings);
                    return ExitCode::from(64);
                }
            };
            for w in &report.warnings {
                tracing::warn!(file = %w.file.display(), "{}", w);
            }
            serve(cfg)
        }
    }
}

fn serve(cfg: Config) -> ExitCode {
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
