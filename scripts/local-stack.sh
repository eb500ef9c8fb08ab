#!/usr/bin/env bash
# The whole billing story on this machine, in one command:
#   moto_server (DynamoDB, its stream, EventBridge, SQS) · the i'mport simulator · the six functions
#   under `cargo lambda watch` · tools/local-demo playing sign-ups and months
#   of scheduled charges, then printing the table beside the simulator's ledger.
#
#   scripts/local-stack.sh                 play the story, then stop everything it started
#   scripts/local-stack.sh --keep-running  leave the stack up afterwards (prints how to use and stop it)
#   scripts/local-stack.sh --stop          stop a stack left running by --keep-running
#
# Ports (defaults; a busy default is replaced by a free port unless set explicitly):
#   DYNAMODB_PORT=8000  SIM_PORT=7070  LAMBDA_PORT=9000  MERCHANT_PORT=3000 (the example shop)
# Other knobs: PAYMENT_API (v1; or v2: the same story through the simulator's PortOne V2 face),
#   CHARGE_MODE (queued; or single), TABLE_NAME (billing-local), DEMO_MONTHS (3).
# Everything listens on 127.0.0.1; logs go to .local/logs/. See docs/local-stack.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export AWS_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

LOCAL_DIR="$ROOT/.local"
LOGS="$LOCAL_DIR/logs"
PIDS_FILE="$LOCAL_DIR/stack.pids"
ENV_FILE="$LOCAL_DIR/functions.env"
STARTED_AT=$(date +%s)
TARGET_DIR=${CARGO_TARGET_DIR:-target}

KEEP=0
STOP_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --keep-running) KEEP=1 ;;
    --stop) STOP_ONLY=1 ;;
    -h | --help)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "local-stack: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf '[%4ss] %s\n' "$(($(date +%s) - STARTED_AT))" "$*"; }
die() {
  echo "local-stack: $*" >&2
  exit 1
}

# ── processes: each started in its own session (setsid), stopped as a session ──
declare -a STARTED=() # "name:sid"

# A session still has a live (non-zombie) process.
session_alive() { ps -s "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }

stop_session() { # sid name
  local sid=$1 name=$2 i
  session_alive "$sid" || return 0
  pkill -TERM -s "$sid" 2>/dev/null || true
  for i in $(seq 1 50); do
    session_alive "$sid" || return 0
    sleep 0.1
  done
  echo "local-stack: $name (session $sid) ignored SIGTERM; killing it" >&2
  pkill -KILL -s "$sid" 2>/dev/null || true
}

stop_all() {
  local i entry
  # Newest first: the functions (watch) before the simulator and DynamoDB.
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    entry=${STARTED[$i]}
    stop_session "${entry#*:}" "${entry%%:*}"
  done
  STARTED=()
  rm -f "$PIDS_FILE"
}

stop_recorded() {
  [ -f "$PIDS_FILE" ] || return 1
  local name sid
  while read -r name sid _; do
    [ -n "${sid:-}" ] || continue
    if session_alive "$sid"; then
      echo "local-stack: stopping $name (session $sid)"
      stop_session "$sid" "$name"
    fi
  done < <(tac "$PIDS_FILE") # newest first: the functions before their dependencies
  rm -f "$PIDS_FILE"
}

if [ "$STOP_ONLY" = 1 ]; then
  stop_recorded || echo "local-stack: no stack recorded in $PIDS_FILE"
  exit 0
fi

STACK_UP=0
on_exit() {
  local rc=$?
  if [ "$KEEP" = 1 ] && [ "$STACK_UP" = 1 ]; then
    return "$rc"
  fi
  if [ ${#STARTED[@]} -gt 0 ]; then
    say "stopping what this script started"
    stop_all
  fi
  return "$rc"
}
trap on_exit EXIT
trap 'KEEP=0; echo; say "interrupted"; exit 130' INT TERM

start() { # name logfile command...   (runs in its own session; records the sid)
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  local pid=$!
  STARTED+=("$name:$pid")
  echo "$name $pid $*" >>"$PIDS_FILE"
  eval "PID_${name//-/_}=$pid"
}

wait_tcp() { # name port log seconds
  local name=$1 port=$2 log=$3 secs=$4 pid i
  pid=$(eval "echo \${PID_${name//-/_}}")
  for i in $(seq 1 $((secs * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      die "$name exited before listening on 127.0.0.1:$port (log: $log)"
    fi
    sleep 0.1
  done
  tail -n 30 "$log" >&2 || true
  die "$name did not listen on 127.0.0.1:$port within ${secs}s (log: $log)"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pick_port() { # VAR default  → prints the port to use
  local var=$1 default=$2 explicit=${!1:-}
  if [ -n "$explicit" ]; then
    port_busy "$explicit" && die "$var=$explicit is already in use on 127.0.0.1"
    echo "$explicit"
  elif port_busy "$default"; then
    local p
    p=$(free_port)
    echo "local-stack: port $default is busy; using $p for $var" >&2
    echo "$p"
  else
    echo "$default"
  fi
}

# ── 0. a stack left running earlier? ────────────────────────────────────────
mkdir -p "$LOGS"
if [ -f "$PIDS_FILE" ]; then
  while read -r name sid _; do
    if [ -n "${sid:-}" ] && session_alive "$sid"; then
      die "a stack started earlier is still running ($name, session $sid): run scripts/local-stack.sh --stop first"
    fi
  done <"$PIDS_FILE"
  rm -f "$PIDS_FILE"
fi

# ── 1. tools, by package name, only when missing ────────────────────────────
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (1.94.1 or newer) first"
command -v python3 >/dev/null 2>&1 || die "python3 not found: it is needed for moto_server and cargo-lambda (pip)"

pip_install() {
  say "pip install $*"
  if ! python3 -m pip install --quiet --disable-pip-version-check "$@"; then
    # Debian's system Python refuses global installs (PEP 668): install for the user.
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$@"
  fi
  local user_bin
  user_bin="$(python3 -m site --user-base 2>/dev/null)/bin"
  case ":$PATH:" in *":$user_bin:"*) ;; *) PATH="$PATH:$user_bin" ;; esac
  # pyenv puts new console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
  hash -r
}
have_moto() { command -v moto_server >/dev/null 2>&1 && moto_server --help >/dev/null 2>&1; }
have_cargo_lambda() { command -v cargo-lambda >/dev/null 2>&1 && cargo-lambda lambda --version >/dev/null 2>&1; }

have_moto || pip_install 'moto[server]'
have_moto || die "moto_server still not runnable after pip install 'moto[server]'"
have_cargo_lambda || pip_install cargo-lambda
have_cargo_lambda || die "cargo-lambda still not runnable after pip install cargo-lambda"
say "tools: $(command -v moto_server) · $(cargo-lambda lambda --version 2>/dev/null | head -n1)"

WEBHOOK=0
if [ -f functions/payment-webhook/src/main.rs ] && grep -q 'service_fn' functions/payment-webhook/src/main.rs; then
  WEBHOOK=1
fi

# ── 2. build ────────────────────────────────────────────────────────────────
build() { # label cargo-args...
  local label=$1 n=0 line t0
  shift
  t0=$(date +%s)
  # One line per 25 crates on the terminal; the full output in .local/logs/build.log.
  set +e
  cargo build "$@" 2>&1 | tee -a "$LOGS/build.log" | while IFS= read -r line; do
    case "$line" in
      *Compiling*)
        n=$((n + 1))
        if [ $((n % 25)) = 1 ]; then say "  $label: compiling ($n) ${line#*Compiling }"; fi
        ;;
    esac
  done
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    tail -n 40 "$LOGS/build.log" >&2
    die "cargo build $* failed (see $LOGS/build.log)"
  fi
  say "  $label: built in $(($(date +%s) - t0))s"
}
: >"$LOGS/build.log"
say "building (the first build on a fresh machine takes a few minutes on 2 cores)"
# One invocation, selected the way `cargo lambda watch` runs each function
# (`cargo run --bin <name>` in this workspace: features resolved over all members,
# dev profile), so every crate compiles once and the watch starts the functions
# without compiling anything.
BINS=(--bin billing-callback --bin scheduled-charge --bin charge-worker --bin subscription-api --bin event-publisher)
[ "$WEBHOOK" = 1 ] && BINS+=(--bin payment-webhook)
BINS+=(--bin iamport-sim --bin local-demo --bin merchant-web)
build "workspace" "${BINS[@]}"

# ── 3. start the stack ──────────────────────────────────────────────────────
DYNAMODB_PORT=$(pick_port DYNAMODB_PORT 8000)
SIM_PORT=$(pick_port SIM_PORT 7070)
LAMBDA_PORT=$(pick_port LAMBDA_PORT 9000)
TABLE_NAME=${TABLE_NAME:-billing-local}
CHARGE_MODE=${CHARGE_MODE:-queued}
PAYMENT_API=${PAYMENT_API:-v1}
case "$PAYMENT_API" in v1 | v2) ;; *) die "PAYMENT_API must be v1 or v2, not $PAYMENT_API" ;; esac
MERCHANT_PORT=$(pick_port MERCHANT_PORT 3000)
MERCHANT_URL=${MERCHANT_URL:-http://127.0.0.1:$MERCHANT_PORT}
DDB_URL="http://127.0.0.1:$DYNAMODB_PORT"
SIM_URL="http://127.0.0.1:$SIM_PORT"
LAMBDA_URL="http://127.0.0.1:$LAMBDA_PORT"
WEBHOOK_URL="$LAMBDA_URL/lambda-url/payment-webhook/webhooks/iamport"

# The functions' environment (shared/src/config/): one file, read by the watch
# (exported into its environment) and by local-demo.
{
  echo "TABLE_NAME=$TABLE_NAME"
  echo "AWS_ENDPOINT_URL_DYNAMODB=$DDB_URL"
  # moto_server serves EventBridge and SQS too: the lifecycle events' bus.
  echo "AWS_ENDPOINT_URL_EVENTBRIDGE=$DDB_URL"
  echo "EVENT_BUS_NAME=billing-events-local"
  # Queued mode (the default here; CHARGE_MODE=single scripts/local-stack.sh for one invocation):
  # scheduled-charge plans each run into moto's SQS, local-demo feeds charge-worker from it.
  echo "CHARGE_MODE=$CHARGE_MODE"
  echo "CHARGE_QUEUE_URL=$DDB_URL/123456789012/charge-local"
  echo "AWS_ENDPOINT_URL_SQS=$DDB_URL"
  # And KMS: billing keys are sealed at rest (local-demo creates this alias).
  echo "AWS_ENDPOINT_URL_KMS=$DDB_URL"
  echo "BILLING_KEY_KMS_KEY_ID=alias/billing-keys-local"
  echo "AWS_REGION=$AWS_REGION"
  echo "AWS_EC2_METADATA_DISABLED=true"
  echo "AWS_ACCESS_KEY_ID=test"
  echo "AWS_SECRET_ACCESS_KEY=test"
  echo "IAMPORT_BASE_URL=$SIM_URL"
  echo "IAMPORT_KEY=sim_imp_key"
  echo "IAMPORT_SECRET=sim_imp_secret"
  echo "IAMPORT_PG=chai"
  echo "IAMPORT_TIMEOUT_MS=1000"
  echo "IAMPORT_CONNECT_TIMEOUT_MS=500"
  echo "PAYMENT_API=$PAYMENT_API"
  if [ "$PAYMENT_API" = v2 ]; then
    # The simulator's PortOne V2 face and its default store, channel and (test-only) secrets.
    echo "PORTONE_BASE_URL=$SIM_URL/portone"
    echo "PORTONE_API_SECRET=sim_portone_api_secret"
    echo "PORTONE_WEBHOOK_SECRETS=whsec_aWFtcG9ydC1zaW0gd2ViaG9vayBzZWNyZXQgMDAwMQ=="
    echo "PORTONE_STORE_ID=store-iamport-sim"
    echo "PORTONE_CHANNEL_KEY=channel-key-iamport-sim"
    # The simulator answers at once; the claim lease above must cover the
    # longest chain of these (the 60 s default needs a lease of 725 s).
    echo "PORTONE_TIMEOUT_MS=1000"
  fi
  echo "CALLBACK_URL=$LAMBDA_URL/lambda-url/billing-callback/billing/callback"
  echo "SUCCESS_REDIRECT_URL=$MERCHANT_URL/billing/done"
  echo "FAILURE_REDIRECT_URL=$MERCHANT_URL/billing/failed"
  [ "$WEBHOOK" = 1 ] && echo "NOTICE_URL=$WEBHOOK_URL"
  echo "PLAN_AMOUNT=9900"
  echo "CHARGE_ON_SIGNUP=true"
  echo "CHARGE_CONCURRENCY=8"
  echo "DUNNING_RETRY_DAYS=1,3,7"
  echo "DUNNING_FINAL_STATUS=suspended"
  # Charges paid from an account (CHAI's trans) get a cash receipt (decision 74).
  echo "CASH_RECEIPT_MODE=auto"
  echo "DUE_SHARDS=4"
  echo "CLAIM_LEASE_SECS=300"
  # The story runs in minutes: the quiet period is the shortest a 1 s timeout allows.
  echo "RESEND_QUIET_SECS=65"
  echo "MERCHANT_UID_KEY=local-merchant-uid-key-not-secret"
  # The story plays months in minutes: each run's event time is its billing
  # clock (a test clock, which only a local DynamoDB endpoint allows).
  echo "BILLING_CLOCK=event"
  # V1 webhooks come from the simulator on this machine only.
  echo "WEBHOOK_ALLOWED_IPS=127.0.0.1"
  echo "RUST_LOG=info"
  echo "NO_COLOR=1"
} >"$ENV_FILE"

: >"$PIDS_FILE"
say "starting moto_server on $DDB_URL"
start moto-server "$LOGS/moto_server.log" moto_server -H 127.0.0.1 -p "$DYNAMODB_PORT"
SIM_ARGS=(--addr "127.0.0.1:$SIM_PORT")
[ "$WEBHOOK" = 1 ] && SIM_ARGS+=(--webhook-url "$WEBHOOK_URL")
say "starting the i'mport simulator on $SIM_URL (PAYMENT_API=$PAYMENT_API$([ "$PAYMENT_API" = v2 ] && echo ': its PortOne V2 face under /portone'))"
start iamport-sim "$LOGS/iamport-sim.log" "$TARGET_DIR/debug/iamport-sim" "${SIM_ARGS[@]}"
say "starting cargo lambda watch on $LAMBDA_URL (functions: billing-callback, scheduled-charge, charge-worker, subscription-api, event-publisher$([ "$WEBHOOK" = 1 ] && echo ', payment-webhook'))"
start cargo-lambda-watch "$LOGS/cargo-lambda-watch.log" \
  env CARGO_TERM_COLOR=never bash -c 'set -a; . "$1"; set +a; exec cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$2"' \
  _ "$ENV_FILE" "$LAMBDA_PORT"
[ "$WEBHOOK" = 1 ] || say "functions/payment-webhook is not a Lambda function yet: no webhooks (NOTICE_URL unset)"

wait_tcp moto-server "$DYNAMODB_PORT" "$LOGS/moto_server.log" 30
wait_tcp iamport-sim "$SIM_PORT" "$LOGS/iamport-sim.log" 30
wait_tcp cargo-lambda-watch "$LAMBDA_PORT" "$LOGS/cargo-lambda-watch.log" 60
say "starting the example shop (examples/merchant-web) on $MERCHANT_URL"
start merchant-web "$LOGS/merchant-web.log" env \
  PREPARE_URL="$LAMBDA_URL/lambda-url/billing-callback/billing/prepare" \
  SUBSCRIPTIONS_URL="$LAMBDA_URL/lambda-url/subscription-api" \
  IAMPORT_SDK_URL="$SIM_URL/sdk/iamport.js" PORTONE_SDK_URL="$SIM_URL/sdk/portone.js" \
  "$TARGET_DIR/debug/merchant-web" --addr "127.0.0.1:$MERCHANT_PORT"
wait_tcp merchant-web "$MERCHANT_PORT" "$LOGS/merchant-web.log" 30
STACK_UP=1
say "stack is up (logs: .local/logs/)"

# ── 4. the story ────────────────────────────────────────────────────────────
set +e
"$TARGET_DIR/debug/local-demo" \
  --dynamodb "$DDB_URL" --sim "$SIM_URL" --lambda "$LAMBDA_URL" \
  --table "$TABLE_NAME" --shards 4 --months "${DEMO_MONTHS:-3}" \
  --functions-env "$ENV_FILE" 2>&1 | tee "$LOGS/local-demo.log"
DEMO_RC=${PIPESTATUS[0]}
set -e

# cargo lambda watch compiles on first invoke if the prebuilt binaries did not match.
if grep -q 'Compiling' "$LOGS/cargo-lambda-watch.log" 2>/dev/null; then
  say "note: cargo lambda watch recompiled a function on its first invocation (see .local/logs/cargo-lambda-watch.log)"
fi

echo
if [ "$DEMO_RC" = 0 ]; then
  say "story passed"
else
  say "story FAILED (local-demo exit status $DEMO_RC); logs in .local/logs/"
fi

if [ "$KEEP" = 1 ]; then
  cat <<EOF

The stack keeps running (sessions recorded in .local/stack.pids):
  the example shop        $MERCHANT_URL     open it in a browser: subscribe, then approve or cancel in the simulator's window
  DynamoDB (moto_server)  $DDB_URL          table $TABLE_NAME
  i'mport simulator       $SIM_URL          curl -s $SIM_URL/__sim/ledger
  functions (watch)       $LAMBDA_URL
    prepare   curl -si -X POST $LAMBDA_URL/lambda-url/billing-callback/billing/prepare -H 'content-type: application/json' -d '{"user_id":"me"}'
    callback  $LAMBDA_URL/lambda-url/billing-callback/billing/callback?imp_uid=…&merchant_uid=…
    manage    curl -s $LAMBDA_URL/lambda-url/subscription-api/users/user-1001/subscriptions
              curl -s -X POST $LAMBDA_URL/lambda-url/subscription-api/subscriptions/{id}/cancel -H 'content-type: application/json' -d '{"at":"period_end","reason":"by hand"}'
    charge    curl -s -X POST $LAMBDA_URL/2015-03-31/functions/scheduled-charge/invocations -d '{"scheduled_time":"2027-01-01T01:00:00Z","execution_id":"by-hand"}'
              (or target/debug/local-demo --charge-at 2027-01-01T01:00:00Z --dynamodb $DDB_URL --sim $SIM_URL --lambda $LAMBDA_URL)
  environment of the functions: .local/functions.env · logs: .local/logs/
Stop it with:  scripts/local-stack.sh --stop
EOF
fi
say "done in $(($(date +%s) - STARTED_AT))s"
exit "$DEMO_RC"
