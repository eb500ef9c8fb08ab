//! Chapter 1: the table (from the one Rust definition), the charge queue
//! in queued mode, and the event bus's sink.

use std::time::Instant;

use shared::ledger::dynamodb::table;

use super::Story;
use crate::stack::*;
use crate::{Result, fail};

use super::events::EVENT_SOURCE;

pub(crate) async fn chapter(
    story: &mut Story<'_>,
    event_bus: Option<String>,
) -> Result<Option<testkit::EventSink>> {
    let Story {
        args,
        sdk,
        ddb,
        stack,
        ..
    } = story;
    stack.step(1, "table");
    let t = Instant::now();
    match ddb.describe_table().table_name(&args.table).send().await {
        Ok(_) => println!(
            "  table {} exists already: reusing it (earlier rows stay)",
            args.table
        ),
        Err(_) => {
            table::create_table(ddb, &args.table)
                .await
                .map_err(|e| fail(format!("create_table {}: {e}", args.table)))?;
            println!(
                "  created {} with shared::ledger::dynamodb::table::create_table (pk/sk, GSI `{}` = {}/{}, TTL `{}`) in {:.2}s",
                args.table,
                table::DUE_INDEX,
                table::DUE_PK,
                table::DUE_SK,
                table::TTL_ATTRIBUTE,
                t.elapsed().as_secs_f64()
            );
        }
    }

    let queue_url = read_env_file(&args.functions_env).ok().and_then(|env| {
        let queued = env.iter().any(|(k, v)| k == "CHARGE_MODE" && v == "queued");
        env.into_iter()
            .find(|(k, _)| queued && k == "CHARGE_QUEUE_URL")
            .map(|(_, v)| v)
    });
    if let Some(url) = &queue_url {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let name = url.rsplit('/').next().unwrap_or("charge-local");
        sqs.create_queue().queue_name(name).send().await?;
        println!(
            "  queued mode: scheduled-charge plans each run into {url}; the story drains it through charge-worker"
        );
        stack.queue = Some((sqs, url.clone()));
    }
    let events = match &event_bus {
        Some(bus) => {
            let sink = testkit::EventSink::create_named(sdk, bus, EVENT_SOURCE).await;
            println!(
                "  event bus {bus} with a rule sending every lifecycle event to an SQS queue (moto_server)"
            );
            Some(sink)
        }
        None => None,
    };

    Ok(events)
}
