//! `simulate`: plays seeds of the deterministic simulation and prints the
//! totals (see `scripts/simulate.sh`). Exit status 1 when an invariant broke;
//! each failing seed is printed with the command that replays it.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use simulation::{Params, run_seeds, simulate};

#[derive(Debug, Parser)]
#[command(
    name = "simulate",
    about = "Deterministic simulation of the billing engine"
)]
struct Args {
    /// How many seeds to play (from --start).
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Play only this seed (and print its trace with --trace).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the seed's trace, step by step.
    #[arg(long)]
    trace: bool,
    /// Subscriptions per seed.
    #[arg(long, default_value_t = 8)]
    subscriptions: usize,
    /// Months of daily runs per seed.
    #[arg(long, default_value_t = 4)]
    months: u32,
    /// A clean world (no faults, crashes or stalls), for comparison.
    #[arg(long)]
    no_faults: bool,
    /// The payment API the gateway answers as: v1 (i'mport) or v2 (PortOne V2).
    #[arg(long, env = "PAYMENT_API", default_value = "v1", value_parser = ["v1", "v2"])]
    api: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let params = Params {
        subscriptions: args.subscriptions,
        months: args.months,
        faults: !args.no_faults,
        keep_trace: args.trace,
        gateway_latency: None,
        v2: args.api == "v2",
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = std::time::Instant::now();
    let totals = match args.seed {
        Some(seed) => {
            let report = simulate(seed, &params);
            for line in &report.trace {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "seed {seed}: trace hash {:016x}", report.trace_hash);
            let mut totals = simulation::Totals::default();
            totals.add(&report);
            totals
        }
        None => run_seeds(args.start..args.start + args.seeds, &params),
    };
    let _ = writeln!(out, "{}", totals.line());
    let _ = writeln!(out, "met: {}", totals.stats_line());
    let _ = writeln!(out, "time: {:.1} s", started.elapsed().as_secs_f64());
    for (seed, violations) in &totals.failures {
        let _ = writeln!(
            out,
            "FAILED seed {seed} (replay: scripts/simulate.sh --api {} --seed {seed} --trace)",
            args.api
        );
        for v in violations {
            let _ = writeln!(out, "  {v}");
        }
    }
    let _ = out.flush();
    if totals.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
