//! # The deterministic simulation of the billing engine
//!
//! Each seed plays a world of subscriptions over several months on tokio's
//! paused clock: sign-ups through a model of i'mport's payment window
//! (browsers that come back zero to three times, webhooks), daily scheduled
//! runs (delivered twice, or run twice at once), and i'mport's faults (answer
//! lost after the charge, a request still processing after our timeout,
//! 5xx, 401, requests never sent, a slow getToken, declines, deleted keys),
//! with crashes at any await point and runs stalled past their lease. The
//! engine is the production code, on the in-memory ledger (held to DynamoDB's
//! semantics by the contract suite) and the model of i'mport.
//!
//! Invariants, checked as steps happen and at the end (`world::verdict`):
//! at most one payment per (subscription, period); every payment i'mport
//! took is recorded as paid or waits for a person; no period skipped or
//! billed before it is due; no charge sent without a live claim; no new
//! merchant uid for a period while an earlier one may still be paid.
//!
//! A seed replays exactly: the same seed gives the same trace (its hash is
//! part of every report). `scripts/simulate.sh --seed N --trace` prints it.

mod model;
mod world;

pub use world::{INVARIANTS, Params, SeedReport, callback_with_slow_gateway, simulate};

use std::collections::BTreeMap;

/// Totals over many seeds.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub seeds: u64,
    pub steps: u64,
    pub double_charges: u64,
    pub unrecorded: u64,
    pub stuck: u64,
    pub needs_review: u64,
    /// Broken invariants by name, over all seeds.
    pub broken: BTreeMap<&'static str, u64>,
    /// Seeds that broke an invariant, with what they broke.
    pub failures: Vec<(u64, Vec<String>)>,
    pub stats: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn add(&mut self, r: &SeedReport) {
        self.seeds += 1;
        self.steps += r.steps;
        self.double_charges += r.double_charges;
        self.unrecorded += r.unrecorded;
        self.stuck += r.stuck;
        self.needs_review += r.needs_review;
        for (k, v) in &r.broken {
            *self.broken.entry(k).or_insert(0) += v;
        }
        if !r.ok() {
            self.failures.push((r.seed, r.violations.clone()));
        }
        for (k, v) in &r.stats {
            *self.stats.entry(k).or_insert(0) += v;
        }
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one-line summary CI shows.
    pub fn line(&self) -> String {
        format!(
            "seeds: {}, failing: {}, steps: {}, double charges: {}, unrecorded charges: {}, stuck: {}, needs review: {}",
            self.seeds,
            self.failures.len(),
            self.steps,
            self.double_charges,
            self.unrecorded,
            self.stuck,
            self.needs_review
        ) + &self.invariants_line()
    }

    /// `, {invariant}: {count}` for every invariant of the customer's side
    /// (zeros included, so the line keeps its shape).
    pub fn invariants_line(&self) -> String {
        INVARIANTS
            .iter()
            .map(|name| format!(", {name}: {}", self.broken.get(name).copied().unwrap_or(0)))
            .collect()
    }

    /// What the seeds went through (evidence that the faults were met).
    pub fn stats_line(&self) -> String {
        self.stats
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Plays `seeds` (on every core: each seed is its own single-threaded,
/// deterministic world) and adds them up in seed order.
pub fn run_seeds(seeds: std::ops::Range<u64>, params: &Params) -> Totals {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let reports: Vec<SeedReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    seeds
                        .filter(|s| s % workers == w)
                        .map(|s| simulate(s, params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut reports = reports;
    reports.sort_by_key(|r| r.seed);
    let mut totals = Totals::default();
    for r in &reports {
        totals.add(r);
    }
    totals
}
