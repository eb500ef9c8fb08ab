#!/usr/bin/env bash
# Bootstrap sizes and init times (a benchmark, not a test; called by `scripts/bench.sh --cold-start`).
# - sizes: `cargo lambda build --release --arm64` (what is deployed), bytes per bootstrap;
# - init: each function's release binary (x86_64, this machine) started against a local Lambda runtime
#   API (`cargo lambda watch --only-lambda-apis`), from process start until it connects to ask for its
#   first event (what Lambda reports as Init Duration), median of RUNS; RSS (VmHWM) at that point.
#   The first event's own handling is not included: invoking through cargo-lambda 1.9's runtime API
#   from an external process hung here (see docs/performance.md).
# Needs moto_server and the simulator: AWS_ENDPOINT_URL_DYNAMODB / IAMPORT_BASE_URL / TABLE_NAME set
# by scripts/bench.sh, or started here.
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
NEED_CARGO_LAMBDA=1 scripts/setup.sh
RUNS=${RUNS:-5}
FUNCTIONS=(billing-callback payment-webhook scheduled-charge)

echo "== bootstrap sizes (cargo lambda build --release --arm64)"
cargo lambda build --release --arm64 $(printf -- '--bin %s ' "${FUNCTIONS[@]}") 2>&1 | tail -1
for f in "${FUNCTIONS[@]}"; do
  printf '%-18s %8.1f MiB (arm64)\n' "$f" "$(awk -v b="$(stat -c %s "target/lambda/$f/bootstrap")" 'BEGIN {print b / 1048576}')"
done

cargo build --release --locked $(printf -- '-p %s ' "${FUNCTIONS[@]}") 2>&1 | tail -1
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  p=$(free_port); moto_server -H 127.0.0.1 -p "$p" > "$work/moto.log" 2>&1 & pids+=($!); wait_port "$p"
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$p"
  cargo build --release --locked -p iamport-sim 2>&1 | tail -1
  s=$(free_port); target/release/iamport-sim --addr "127.0.0.1:$s" > /dev/null 2>&1 & pids+=($!); wait_port "$s"
  export IAMPORT_BASE_URL="http://127.0.0.1:$s" IAMPORT_KEY=sim_imp_key IAMPORT_SECRET=sim_imp_secret
fi
export TABLE_NAME=${TABLE_NAME:-cold-start} CALLBACK_URL=http://127.0.0.1/billing/callback
export SUCCESS_REDIRECT_URL=http://127.0.0.1/ok FAILURE_REDIRECT_URL=http://127.0.0.1/failed RUST_LOG=warn

api=$(free_port)
cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$api" > "$work/watch.log" 2>&1 & pids+=($!)
wait_port "$api"

echo "== init (Lambda's Init Duration): process start → the runtime asks the runtime API for its first event (median of $RUNS), RSS then"
for f in "${FUNCTIONS[@]}"; do
  inits=(); rss=0
  for _ in $(seq 1 "$RUNS"); do
    start=$(date +%s%N)
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$api/.rt" AWS_LAMBDA_FUNCTION_NAME="$f" AWS_LAMBDA_FUNCTION_VERSION=1 \
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 "target/release/$f" > "$work/$f.log" 2>&1 &
    fp=$!
    for _ in $(seq 1 2000); do ss -tnp 2>/dev/null | grep -q "pid=$fp," && break; sleep 0.002; done
    ready=$(date +%s%N)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$fp/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$rss" ] && rss=$hwm
    kill "$fp" 2>/dev/null || true; wait "$fp" 2>/dev/null || true
    inits+=($(( (ready - start) / 1000000 )))
  done
  median=$(printf '%s\n' "${inits[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  printf '%-18s init median %4d ms  (runs: %s)  peak RSS %.1f MiB\n' "$f" "$median" "${inits[*]}" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')"
done
