//! `local-demo`: plays the whole billing story against a running local stack
//! (moto_server, the i'mport simulator and the functions under
//! `cargo lambda watch`), as `scripts/local-stack.sh` starts it.
//!
//! The story's chapters are in `story/` (one file each), the customers in
//! `people.rs`, the stack it drives and the checks it keeps in `stack.rs`.
//!
//! 1. creates the table from the one Rust definition (`create_table`);
//! 2. registers customers: `POST …/billing/prepare`, the simulator's payment
//!    window, then the real callback, exactly as a browser would;
//! 3. sets scenarios in the simulator (always declined, declined once,
//!    a timeout after charging) and asks the management API
//!    (`subscription-api`) for a plan change and a cancel at period end;
//! 4. invokes `scheduled-charge` once a day (10:00 Asia/Seoul) for a few
//!    months of billing clock; a customer whose card is declined gets a new
//!    card through the API and the payment window, charged at once;
//! 5. refunds part of a charge through the API (the same request twice);
//! 6. prints subscriptions and charge attempts from DynamoDB beside the
//!    simulator's ledger, and checks that nothing was charged twice;
//! 7. plays the event source mapping (the table's stream to
//!    `event-publisher`) and prints each customer's lifecycle events as
//!    EventBridge delivered them.
//!
//! Exit status: 0 when every check passed, 1 when a check failed, 2 when the
//! stack could not be driven at all.

mod people;
mod stack;
mod story;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use chrono::{DateTime, Utc};
use clap::Parser;
use shared::ledger::dynamodb::{DynamoLedger, table};

use stack::{Checks, LOCAL_KMS_KEY, Stack, ensure_kms_key, kst, read_env_file, warm_up_charger};
use story::Story;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

fn fail(msg: impl Into<String>) -> Error {
    msg.into().into()
}

#[derive(Debug, Parser)]
#[command(
    name = "local-demo",
    about = "Plays the billing story against the local stack started by scripts/local-stack.sh"
)]
struct Args {
    /// DynamoDB API (moto_server).
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL_DYNAMODB",
        default_value = "http://127.0.0.1:8000"
    )]
    dynamodb: String,
    /// The i'mport simulator.
    #[arg(
        long,
        env = "IAMPORT_BASE_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    sim: String,
    /// `cargo lambda watch` (function URLs and the Lambda invoke API).
    #[arg(
        long,
        env = "LOCAL_LAMBDA_URL",
        default_value = "http://127.0.0.1:9000"
    )]
    lambda: String,
    /// Table the functions use (their TABLE_NAME).
    #[arg(long, env = "TABLE_NAME", default_value = "billing-local")]
    table: String,
    /// Due-index shards the functions use (their DUE_SHARDS).
    #[arg(long, env = "DUE_SHARDS", default_value_t = 4)]
    shards: u32,
    #[arg(long, env = "AWS_REGION", default_value = "ap-northeast-2")]
    region: String,
    /// Months of billing clock to play after the sign-up month.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=12))]
    months: u32,
    /// Print every daily run, not only the ones that had work.
    #[arg(long)]
    verbose: bool,
    /// The functions' environment (KEY=VALUE lines): tells whether webhooks
    /// are on (NOTICE_URL).
    #[arg(long, default_value = ".local/functions.env")]
    functions_env: PathBuf,
    /// Instead of the story: one charge run at this billing time (RFC 3339),
    /// printing the function's answer.
    #[arg(long, value_name = "RFC3339")]
    charge_at: Option<String>,
    /// Instead of the story: create the table and the local KMS key (if
    /// missing) and stop
    /// (`scripts/sam-local.sh` uses it).
    #[arg(long)]
    create_table: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match play(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\nlocal-demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn play(args: Args) -> Result<bool> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&args.dynamodb)
        .region(Region::new(args.region.clone()))
        .credentials_provider(Credentials::new("test", "test", None, None, "local-demo"))
        .load()
        .await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    // The functions seal billing keys with this KMS key (moto serves KMS on
    // the same endpoint); the story reads the table as they do.
    let kms = aws_sdk_kms::Client::new(&sdk);
    let kms_key = read_env_file(&args.functions_env)
        .ok()
        .and_then(|env| env.into_iter().find(|(k, _)| k == "BILLING_KEY_KMS_KEY_ID"))
        .map_or_else(|| LOCAL_KMS_KEY.to_owned(), |(_, v)| v);
    ensure_kms_key(&kms, &kms_key).await?;
    let stack = Stack {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // The first request to each function may wait for `cargo lambda watch` to start it.
            .timeout(Duration::from_secs(900))
            .build()?,
        store: DynamoLedger::new(ddb.clone(), args.table.clone(), args.shards)
            .with_sealed_keys(kms.clone(), &kms_key),
        sim: args.sim.trim_end_matches('/').to_owned(),
        lambda: args.lambda.trim_end_matches('/').to_owned(),
        started: Instant::now(),
        queue: None,
        story_clock: std::sync::Mutex::new(None),
    };
    let checks = Checks::default();
    // Where event-publisher puts the lifecycle events (its EVENT_BUS_NAME).
    let event_bus = read_env_file(&args.functions_env).ok().and_then(|env| {
        env.into_iter()
            .find(|(k, _)| k == "EVENT_BUS_NAME")
            .map(|(_, v)| v)
    });

    if args.create_table {
        if ddb
            .describe_table()
            .table_name(&args.table)
            .send()
            .await
            .is_err()
        {
            table::create_table(&ddb, &args.table)
                .await
                .map_err(|e| fail(format!("create_table {}: {e}", args.table)))?;
        }
        println!("local-demo: table {} ready", args.table);
        return Ok(true);
    }
    if let Some(at) = &args.charge_at {
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| fail(format!("--charge-at {at}: {e}")))?
            .with_timezone(&Utc);
        warm_up_charger(&stack).await?;
        let run_id = format!("manual-{}", at.format("%Y%m%dT%H%M%S"));
        let run = stack.charge_run(at, &run_id).await?;
        println!("{}  {}", kst(at), run.summary());
        println!("{}", run.body);
        return Ok(run.error.is_none());
    }

    println!(
        "local-demo: DynamoDB {} · i'mport simulator {} · functions {}",
        args.dynamodb, stack.sim, stack.lambda
    );

    let mut story = Story {
        args: &args,
        sdk,
        ddb,
        stack,
        checks,
    };
    let events = story::setup::chapter(&mut story, event_bus).await?;
    let members = story::signups::chapter(&mut story).await?;
    let webhooks = story::scenarios::chapter(&mut story, &members).await?;
    let runs = story::runs::chapter(&mut story, &members).await?;
    story::runs::await_webhooks(&story.stack, &webhooks).await?;
    story::refund::chapter(&mut story, &members).await?;
    let books = story::books::chapter(&mut story, &members).await?;
    story::verdict::check(&mut story, &books, &runs).await?;

    story::finish(&mut story, &books, events.as_ref()).await
}
