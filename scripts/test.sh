#!/usr/bin/env bash
# The test command: formatting, lints, every test of the workspace (unit,
# the ledger contract on moto_server and in memory, end-to-end handler tests
# on moto_server and the i'mport simulator, the sign-up in headless Chromium,
# the fault matrix, the deterministic simulation), in both payment APIs where
# they apply, and the infra checks. Nothing leaves 127.0.0.1.
#
# Every cargo invocation selects the whole workspace (`--workspace`, with
# `--test NAME` to pick targets): a `-p` subset resolves features afresh and
# rebuilds the dependencies it shares with the rest, which cost minutes on a
# clean clone. Each step prints how long it took.
#
# `scripts/test.sh --fast` is the inner loop (no moto_server, no docker):
# the unit tests of every crate (the pure core among them), the in-memory
# half of the ledger contract, the function tests that run on the
# in-memory ledger, and 200 simulation seeds per payment API.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
case "${1:-}" in
  --fast) fast=true ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--fast]" >&2; exit 2 ;;
esac

# The AWS SDK must never look for real credentials or the metadata service.
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export SAM_CLI_TELEMETRY=0 CARGO_TERM_COLOR=never

started=$(date +%s)
last=
step() {
  local now
  now=$(date +%s)
  [ -n "$last" ] && echo "   (took $((now - last)) s)"
  last=$now
  echo "== [$((now - started)) s] $*"
}

# Runs a command quietly: its lines matching $1 on success, everything on
# failure.
quietly() {
  local pattern=$1 log
  shift
  log=$(mktemp)
  if "$@" >"$log" 2>&1; then
    grep -E "$pattern" "$log" || true
    rm -f "$log"
  else
    cat "$log"
    rm -f "$log"
    echo "failed: $*" >&2
    exit 1
  fi
}

if $fast; then
  step "build the fast tests"
  quietly "^error|^warning" cargo test --workspace --locked --lib --test ledger_contract --test simulation \
    --test callback --test webhook --test runs --test api --no-run
  step "unit tests of every crate"
  quietly "test result:" cargo test --workspace --locked --lib \
    | awk '{p += $4; f += $6} END {printf "unit tests: %d passed, %d failed, in %d crates\n", p, f, NR}'
  step "ledger contract, in-memory half"
  quietly "test result:" cargo test --workspace --locked --test ledger_contract -- memory::
  step "function tests on the in-memory ledger (billing-callback, payment-webhook, scheduled-charge, subscription-api)"
  quietly "test result:" cargo test --workspace --locked --test callback --test webhook --test runs --test api \
    -- --skip on_dynamodb::
  for api in v1 v2; do
    step "simulation, 200 seeds, PAYMENT_API=$api"
    SIMULATION_SEEDS=200 PAYMENT_API=$api quietly "seeds:|test result:" \
      cargo test --workspace --locked --test simulation the_ci_budget_of_seeds -- --nocapture
  done
  step "done (fast)"
  exit 0
fi

step "setup"
scripts/setup.sh
command -v moto_server >/dev/null || { echo "moto_server is required (pip install 'moto[server]')" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
# The two whole-system checks run on their own below, so that their
# summaries show in the output (cargo test hides a passing test's output).
PAYMENT_API=v1 cargo test --workspace --locked -- \
  --skip a_billing_month_under_each_fault_keeps_every_invariant \
  --skip the_ci_budget_of_seeds_keeps_every_invariant \
  --skip every_v2_answer_matches_the_official_spec
step "the end-to-end tests again, PAYMENT_API=v2 (the simulator's PortOne V2 face)"
PAYMENT_API=v2 cargo test --workspace --locked \
  --test runs --test queue --test webhook --test api --test routes --test events \
  --test portone_v2 --test secret_hygiene --test untrusted_input --test browser
step "PortOne V2 face of the simulator against the official spec subset"
cargo test --workspace --locked --test v2_conformance every_v2_answer -- --nocapture 2>&1 \
  | grep -E "v2 conformance:|test result:|panicked|break the spec|^(get|post|delete) "
# (The handlers' metric lines, one per run, are left out of the output.)
for api in v1 v2; do
  step "fault matrix, PAYMENT_API=$api (end to end: handlers, moto_server, the simulator)"
  PAYMENT_API=$api cargo test --workspace --locked --test fault_matrix -- --nocapture --test-threads 1 \
    | sed -u '/"_aws":{"CloudWatchMetrics"/d'
done
for api in v1 v2; do
  step "deterministic simulation, PAYMENT_API=$api (in-memory ledger, model of the gateway, virtual time)"
  PAYMENT_API=$api cargo test --workspace --locked --test simulation the_ci_budget_of_seeds -- --nocapture
done
step "infra checks"
scripts/check-infra.sh
step "sam local smoke test (Debian-built Lambda image, moto_server and the simulator on a docker network)"
scripts/sam-local.sh --smoke
step "done"
