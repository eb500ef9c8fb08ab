#!/usr/bin/env bash
# The test command: formatting, lints, every test of the workspace (unit,
# the ledger contract on moto_server and in memory, end-to-end handler tests
# on moto_server and the i'mport simulator, the sign-up in headless Chromium,
# the fault matrix, the deterministic simulation), in both payment APIs where
# they apply, and the infra checks. Nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# The AWS SDK must never look for real credentials or the metadata service.
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export SAM_CLI_TELEMETRY=0 CARGO_TERM_COLOR=never

scripts/setup.sh
command -v moto_server >/dev/null || { echo "moto_server is required (pip install 'moto[server]')" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# The two whole-system checks run on their own below, so that their
# summaries show in the output (cargo test hides a passing test's output).
PAYMENT_API=v1 cargo test --workspace --locked -- \
  --skip a_billing_month_under_each_fault_keeps_every_invariant \
  --skip the_ci_budget_of_seeds_keeps_every_invariant \
  --skip every_v2_answer_matches_the_official_spec
echo "== the end-to-end tests again, PAYMENT_API=v2 (the simulator's PortOne V2 face)"
PAYMENT_API=v2 cargo test --locked -p scheduled-charge -p charge-worker -p payment-webhook \
  -p subscription-api -p event-publisher -p e2e-tests -p merchant-web -- \
  --skip a_billing_month_under_each_fault_keeps_every_invariant
echo "== PortOne V2 face of the simulator against the official spec subset"
cargo test --locked -p iamport-sim --test v2_conformance every_v2_answer -- --nocapture 2>&1 \
  | grep -E "v2 conformance:|test result:|panicked|break the spec|^(get|post|delete) "
# (The handlers' metric lines, one per run, are left out of the output.)
for api in v1 v2; do
  echo "== fault matrix, PAYMENT_API=$api (end to end: handlers, moto_server, the simulator)"
  PAYMENT_API=$api cargo test --locked -p e2e-tests --test fault_matrix -- --nocapture --test-threads 1 \
    | sed -u '/"_aws":{"CloudWatchMetrics"/d'
done
for api in v1 v2; do
  echo "== deterministic simulation, PAYMENT_API=$api (in-memory ledger, model of the gateway, virtual time)"
  PAYMENT_API=$api cargo test --locked -p simulation --test simulation the_ci_budget_of_seeds -- --nocapture
done
echo "== infra checks"
scripts/check-infra.sh
echo "== sam local smoke test (Debian-built Lambda image, moto_server and the simulator on a docker network)"
scripts/sam-local.sh --smoke
