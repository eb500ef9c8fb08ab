#!/usr/bin/env bash
# The test command: formatting, lints, every test of the workspace (unit,
# store tests on moto_server, end-to-end handler tests on moto_server and
# the i'mport simulator), and the infra checks. Nothing leaves 127.0.0.1.
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
cargo test --workspace --locked
echo "== infra checks"
scripts/check-infra.sh
