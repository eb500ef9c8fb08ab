//! `iamport-sim`: run the i'mport simulator as a process.
//!
//! Prints exactly one line, `iamport-sim listening on http://127.0.0.1:PORT`, to stdout once it
//! accepts connections; logs go to stderr (`RUST_LOG`, default `info`). Stops on SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Parser;
use iamport_sim::{SimConfig, WebhookFormat};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "iamport-sim",
    version,
    about = "A local stand-in for the i'mport (PortOne V1) REST API"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "IAMPORT_SIM_ADDR", default_value = "127.0.0.1:0")]
    addr: String,
    /// REST API key accepted by /users/getToken.
    #[arg(long, env = "IAMPORT_SIM_IMP_KEY", default_value = "sim_imp_key")]
    imp_key: String,
    /// REST API secret accepted by /users/getToken.
    #[arg(
        long,
        env = "IAMPORT_SIM_IMP_SECRET",
        default_value = "sim_imp_secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    imp_secret: String,
    /// Default webhook URL (a request's notice_url overrides it).
    #[arg(long, env = "IAMPORT_SIM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Webhook body encoding: json or form.
    #[arg(long, env = "IAMPORT_SIM_WEBHOOK_FORMAT", default_value = "json")]
    webhook_format: WebhookFormat,
    /// Extra identical deliveries of every webhook.
    #[arg(long, env = "IAMPORT_SIM_WEBHOOK_DUPLICATES", default_value_t = 0)]
    webhook_duplicates: u32,
    /// Delay before every API answer, in milliseconds.
    #[arg(long, env = "IAMPORT_SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Lifetime of newly issued access tokens, in seconds.
    #[arg(long, env = "IAMPORT_SIM_TOKEN_TTL_SECS", default_value_t = 1800)]
    token_ttl_secs: i64,
    /// PG used by the window when `pg` is not given.
    #[arg(long, env = "IAMPORT_SIM_PG_PROVIDER", default_value = "chai")]
    pg_provider: String,
    /// pg_id (MID / CHAI public key) when `pg` carries none.
    #[arg(long, env = "IAMPORT_SIM_PG_ID", default_value = "sim_pg_id")]
    pg_id: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = SimConfig {
        imp_key: args.imp_key,
        imp_secret: args.imp_secret,
        token_ttl_secs: args.token_ttl_secs,
        webhook_url: args.webhook_url,
        webhook_format: args.webhook_format,
        webhook_duplicates: args.webhook_duplicates,
        pg_provider: args.pg_provider,
        pg_id: args.pg_id,
        latency: Duration::from_millis(args.latency_ms),
        ..SimConfig::default()
    };
    let sim = iamport_sim::spawn(config, &args.addr).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "iamport-sim listening on {}", sim.base_url())?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(addr = %sim.addr(), "ready");
    wait_for_signal().await?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
