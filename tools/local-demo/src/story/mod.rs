//! The story, chapter by chapter. Each chapter is a function over the
//! [`Story`] (the arguments, the AWS clients, the stack and the checks): it
//! prints what it does and returns what later chapters need.

pub(crate) mod books;
pub(crate) mod events;
pub(crate) mod refund;
pub(crate) mod runs;
pub(crate) mod scenarios;
pub(crate) mod setup;
pub(crate) mod signups;
pub(crate) mod verdict;

use crate::people::Member;
use crate::stack::{Checks, Stack};
use crate::{Args, Result};
use books::Books;

/// What every chapter works with.
pub(crate) struct Story<'a> {
    pub(crate) args: &'a Args,
    pub(crate) sdk: aws_config::SdkConfig,
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) stack: Stack,
    pub(crate) checks: Checks,
}

/// The end: the table/ledger mismatches and double charges, the lifecycle
/// events (chapter 7, when the functions publish them), and the summary
/// lines `scripts/local-stack.sh` reads. True when every check passed.
pub(crate) async fn finish(
    story: &mut Story<'_>,
    books: &Books<'_>,
    events: Option<&testkit::EventSink>,
) -> Result<bool> {
    let Books {
        finals,
        mismatches,
        doubles_muid,
        doubles_period,
        ..
    } = books;
    let Story {
        args,
        stack,
        checks,
        ddb,
        ..
    } = story;
    for m in mismatches.iter() {
        println!("  ✗ table vs ledger: {m}");
    }
    checks.check(
        mismatches.is_empty(),
        format!("{} table/ledger mismatch(es)", mismatches.len()),
    );
    let doubles = doubles_muid.len() + doubles_period.len();
    for (muid, n) in doubles_muid.iter() {
        println!("  ✗ {muid} was paid {n} times");
    }
    for ((sub, period), n) in doubles_period.iter() {
        println!("  ✗ subscription {sub} paid {n} times for period {period}");
    }
    if let Some(sink) = events {
        let members: Vec<&Member> = finals.iter().map(|(m, _, _)| *m).collect();
        events::lifecycle_events(stack, ddb, args, sink, &members, checks).await?;
    }
    println!();
    println!("  table vs ledger: {} mismatches", mismatches.len());
    println!("  double charges: {doubles}");
    println!(
        "  story checks: {} passed, {} failed",
        checks.passed,
        checks.failed.len()
    );
    println!("[{}] done", stack.elapsed());
    Ok(doubles == 0 && checks.failed.is_empty())
}
