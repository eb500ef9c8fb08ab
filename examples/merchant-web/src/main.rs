//! `merchant-web`: the example shop as a process (the local stack runs it on
//! `MERCHANT_URL`). Prints `merchant-web listening on http://…` once it
//! accepts connections.

use std::io::Write;

use clap::Parser;
use merchant_web::{MerchantConfig, serve};

#[derive(Debug, Parser)]
#[command(
    name = "merchant-web",
    about = "An example merchant site selling a subscription"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MERCHANT_ADDR", default_value = "127.0.0.1:3000")]
    addr: String,
    /// The billing service's POST /billing/prepare.
    #[arg(long, env = "PREPARE_URL")]
    prepare_url: String,
    /// The management API's base URL (GET {base}/subscriptions/{id}).
    #[arg(long, env = "SUBSCRIPTIONS_URL")]
    subscriptions_url: String,
    /// i'mport's browser SDK.
    #[arg(
        long,
        env = "IAMPORT_SDK_URL",
        default_value = "https://cdn.iamport.kr/v1/iamport.js"
    )]
    iamport_sdk: String,
    /// PortOne V2's browser SDK.
    #[arg(
        long,
        env = "PORTONE_SDK_URL",
        default_value = "https://cdn.portone.io/v2/browser-sdk.js"
    )]
    portone_sdk: String,
    /// The merchant code for IMP.init.
    #[arg(long, env = "IMP_CODE", default_value = "imp00000000")]
    imp_code: String,
    #[arg(long, env = "PLAN_AMOUNT", default_value_t = 9900)]
    plan_amount: i64,
    #[arg(long, env = "PLAN_NAME", default_value = "월간 구독")]
    plan_name: String,
    /// Sent as x-api-key to the billing routes.
    #[arg(long, env = "MERCHANT_BILLING_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (addr, task) = serve(
        MerchantConfig {
            prepare_url: args.prepare_url,
            subscriptions_url: args.subscriptions_url,
            iamport_sdk: args.iamport_sdk,
            portone_sdk: args.portone_sdk,
            imp_code: args.imp_code,
            plan_amount: args.plan_amount,
            plan_name: args.plan_name,
            api_key: args.api_key,
        },
        &args.addr,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "merchant-web listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    task.await?;
    Ok(())
}
