#!/usr/bin/env bash
# Benchmarks (not tests): prints figures for the current build on this machine.
#   scripts/bench.sh                 our pipeline (in-memory ledger at 5 ms per request, the simulator at
#                                    100 ms in its own process): a sequential baseline and one worker at
#                                    concurrency 32 and 128 side by side, CPU per charge; 100,000 due
#                                    through planner + workers; then on moto_server (labelled): the
#                                    planner and one worker each in its own process (CPU, peak RSS),
#                                    throughput at concurrency 8/32/128, DynamoDB requests per charge,
#                                    peak RSS for 10,000 due, due-query cost for 100,000
#   scripts/bench.sh --quick         smaller counts
#   scripts/bench.sh --cold-start    also: bootstrap sizes (arm64) and cold starts (cargo lambda watch)
# Everything runs on 127.0.0.1: moto_server and the i'mport simulator as separate processes, the
# functions' handlers (the real scheduled-charge and charge-worker) in release builds of tools/bench,
# one process per measured function.
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0

QUICK=0; COLD=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --cold-start) COLD=1 ;;
    *) echo "usage: $0 [--quick] [--cold-start]" >&2; exit 2 ;;
  esac
done
LATENCY_MS=${LATENCY_MS:-100}
ROUNDS=${ROUNDS:-$([ $QUICK = 1 ] && echo 2 || echo 5)}
MEMORY_SUBS=${MEMORY_SUBS:-$([ $QUICK = 1 ] && echo 2000 || echo 10000)}
QUERY_SUBS=${QUERY_SUBS:-$([ $QUICK = 1 ] && echo 10000 || echo 100000)}

scripts/setup.sh
echo "== building (release)"
cargo build --release --locked -p bench -p iamport-sim 2>&1 | tail -1

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# moto_server copies a whole table for every TransactWriteItems (its rollback), so a long-lived
# moto slows down as tables grow: every phase gets a fresh one.
moto_pid=""
fresh_moto() {
  [ -n "$moto_pid" ] && { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
  moto_port=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 & moto_pid=$!; pids+=($moto_pid)
  wait_port "$moto_port"
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$moto_port"
}
sim_port=$(free_port)
target/release/iamport-sim --addr "127.0.0.1:$sim_port" --latency-ms "$LATENCY_MS" > "$work/sim.out" 2> "$work/sim.log" & pids+=($!)
wait_port "$sim_port"
set_latency() { curl -fsS -X POST -H 'content-type: application/json' -d "{\"ms\": $1}" "$IAMPORT_BASE_URL/__sim/latency" > /dev/null; }

export IAMPORT_BASE_URL="http://127.0.0.1:$sim_port" IAMPORT_KEY=sim_imp_key IAMPORT_SECRET=sim_imp_secret
export IAMPORT_TIMEOUT_MS=10000 RUST_LOG=warn TABLE_NAME=bench
bench=target/release/charge-bench
# Keeps the figures, drops the EMF metrics line the handler prints on stdout.
bench_run() { "$bench" run "$@" | grep -v '^{'; }
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
phase() { # concurrency latency_ms count [deadline_secs]
  fresh_moto
  set_latency "$2"
  export CHARGE_CONCURRENCY=$1
  $bench seed --count "$3" --keys 2>/dev/null
  printf 'concurrency %3s, latency %4s ms, %5s due: ' "$1" "$2" "$3"
  bench_run --at "$now" --latency-ms "$2" --deadline-secs "${4:-0}" | tr '\n' ' '
  echo
}

echo "== machine: $(nproc) cores, $(uname -m); the simulator adds its latency to every i'mport answer"
want() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }   # ONLY=pipeline,fanout,functions,throughput,memory,query
FANOUT_DUE=${FANOUT_DUE:-$([ $QUICK = 1 ] && echo 20000 || echo 100000)}
FUNCTION_DUE=${FUNCTION_DUE:-$([ $QUICK = 1 ] && echo 128 || echo 256)}
PLAN_DUE=${PLAN_DUE:-$([ $QUICK = 1 ] && echo 1000 || echo 5000)}

if want pipeline; then
echo "== our pipeline (no moto): in-memory ledger at 5 ms per request, the simulator (its own process) at $LATENCY_MS ms"
"$bench" pipeline --latency-ms "$LATENCY_MS" --store-ms 5 --concurrency 32,128 --seconds 10 | grep -v '^{'
fi

if want fanout; then
echo "== queued mode at scale (no moto): $FANOUT_DUE due, planner + 4 workers x 32, i'mport 20 ms (the simulator in its own process), store 5 ms"
"$bench" fanout --due "$FANOUT_DUE" --workers 4 --per-worker 32 --latency-ms 20 --store-ms 5 | grep -v '^{'
fi
echo "== below: moto_server (DynamoDB emulator, Python) as the store: its limits, not ours (see docs/performance.md)"

if want functions; then
# The planner over a table of PLAN_DUE due (it only pages the index and sends messages), then one
# worker over FUNCTION_DUE (moto charges a few per second), each on a fresh moto_server.
echo "== one function per process (moto_server for DynamoDB and SQS, the simulator elsewhere): the planner over $PLAN_DUE due, one worker at concurrency 128 over $FUNCTION_DUE"
functions_phase() { # due command...
  fresh_moto
  export AWS_ENDPOINT_URL_SQS="$AWS_ENDPOINT_URL_DYNAMODB"
  $bench seed --count "$1" --keys 2>/dev/null
  queue_url=$($bench queue --name charge)
  CHARGE_MODE=queued CHARGE_QUEUE_URL="$queue_url" $bench plan --at "$now" | grep -v '^{'
}
set_latency "$LATENCY_MS"
functions_phase "$PLAN_DUE"
functions_phase "$FUNCTION_DUE" > /dev/null
CHARGE_CONCURRENCY=128 $bench work --queue-url "$queue_url" --batch 10 --latency-ms "$LATENCY_MS" | grep -v '^{'
unset AWS_ENDPOINT_URL_SQS
fi
if want throughput; then
echo "== throughput of one invocation ($ROUNDS × concurrency due subscriptions each, fresh moto_server each)"
for c in 8 32 128; do phase "$c" "$LATENCY_MS" $((c * ROUNDS)); done
echo "== the DynamoDB-bound ceiling: concurrency 32 with i'mport answering at once"
phase 32 0 $((32 * ROUNDS))
fi

if want memory; then
echo "== memory: one invocation over $MEMORY_SUBS due subscriptions (concurrency 8, 150 s deadline), and over 1,000"
phase 8 "$LATENCY_MS" "$MEMORY_SUBS" 150
phase 8 "$LATENCY_MS" 1000 150
fi

if want query; then
echo "== due-query cost: $QUERY_SUBS due subscriptions in the table"
fresh_moto
$bench seed --count "$QUERY_SUBS"
$bench query --at "$now"
fi

if [ $COLD = 1 ]; then
  scripts/cold-start.sh
fi
