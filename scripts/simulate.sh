#!/usr/bin/env bash
# The deterministic simulation of the billing engine (tests/simulation).
#
#   scripts/simulate.sh                  # 2000 seeds
#   scripts/simulate.sh --seeds 20000    # more
#   scripts/simulate.sh --seed 51 --trace  # replay one seed, step by step
#   scripts/simulate.sh --api v2         # the gateway answers as PortOne V2 (or PAYMENT_API=v2)
#
# Prints `seeds: N, failing: 0, steps: S, double charges: 0, unrecorded charges: 0,
# stuck: 0, needs review: R`, what the seeds met, and each failing seed with
# the command that replays it. Exit status 1 when an invariant broke.
# Everything runs in one process on virtual time: no network, no AWS.
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--seeds 2000)
cargo build --quiet --release --locked -p simulation --bin simulate
exec target/release/simulate "${args[@]}"
