#!/usr/bin/env bash
# The functions under `sam local`, the way users test them, on this machine:
#
#   1. installs what is missing (Debian's docker.io and debootstrap; aws-sam-cli and moto by pip) and
#      starts dockerd if none runs;
#   2. builds a Lambda base image once from Debian packages (no registry is needed:
#      debootstrap → docker import → local/lambda-provided:bookworm-x86_64; SAM adds its runtime
#      emulator on top);
#   3. builds the functions for this host (x86_64 bootstraps; the template's Architecture parameter
#      stays arm64 for deploys);
#   4. starts moto_server and the i'mport simulator in containers on a docker network it creates
#      (billing-sam), published to 127.0.0.1 only;
#   5. `sam local invoke -e infra/events/<each>.json` for every fixture, checking each answer;
#   6. `sam local start-api` and `sam local start-lambda` on 127.0.0.1: a sign-up through the
#      simulator's window and the callback, the first charge, a charge run a month later, a webhook,
#      and the management API's view, checked against the simulator's ledger.
#
#   scripts/sam-local.sh            all of it, then stop what it started
#   scripts/sam-local.sh --smoke    only the first fixture invocation and the sign-up (CI)
#
# Every byte stays on 127.0.0.1 or inside the docker network this script creates. Logs: .local/sam/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1

WORK="$ROOT/.local/sam"
mkdir -p "$WORK"
IMAGE=local/lambda-provided:bookworm-x86_64
NET=billing-sam
MOTO=billing-sam-moto
SIM=billing-sam-sim
DDB_PORT=${SAM_DDB_PORT:-18000}
SIM_PORT=${SAM_SIM_PORT:-17070}
API_PORT=${SAM_API_PORT:-13000}
LAMBDA_PORT=${SAM_LAMBDA_PORT:-13001}
TABLE=billing-sam
STARTED_AT=$(date +%s)
say() { printf '[%4ss] %s\n' "$(($(date +%s) - STARTED_AT))" "$*"; }
die() {
  echo "sam-local: $*" >&2
  exit 1
}
PASSED=0
FAILED=0
check() { # condition-status message
  if [ "$1" = 0 ]; then
    PASSED=$((PASSED + 1))
    echo "  ok    $2"
  else
    FAILED=$((FAILED + 1))
    echo "  FAIL  $2"
  fi
}

[ "$(uname -m)" = x86_64 ] || die "this script builds x86_64 bootstraps; on $(uname -m) build for it and adapt IMAGE"

# ── 1. tools ──────────────────────────────────────────────────────────────
scripts/setup.sh >/dev/null
need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $WORK/dockerd.log)"
  (setsid dockerd >"$WORK/dockerd.log" 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || die "dockerd did not start (see $WORK/dockerd.log)"
fi
MOTO_SERVER=$(command -v moto_server)
if command -v pyenv >/dev/null 2>&1; then MOTO_SERVER=$(pyenv which moto_server); fi
# moto_server's Python (a pyenv build, or the system's) is mounted read-only into its container.
PY_HOME=$(dirname "$(dirname "$(head -1 "$MOTO_SERVER" | sed 's/^#!//')")")

# ── 2. the base image ─────────────────────────────────────────────────────
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from Debian packages (debootstrap, about 30 s)"
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase \
    --include=ca-certificates,libffi8,zlib1g,libsqlite3-0,libbz2-1.0,liblzma5,libexpat1 \
    bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed (see $WORK/debootstrap.log)"
  mkdir -p "$rootfs/var/task" "$rootfs/var/runtime" "$rootfs/opt"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change 'WORKDIR /var/task' - "$IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

# ── 3. the functions, for this host ───────────────────────────────────────
say "building the functions for x86_64 (cargo build; the first build takes minutes)"
FUNCTIONS=(billing-callback payment-webhook scheduled-charge subscription-api charge-worker event-publisher)
# The same selection as the test command (every member, every target): a build
# of the binaries alone resolves the dependencies' features without the
# dev-dependencies and recompiles some 70 crates that `cargo test` has built
# already (measured: 103 s against 7 s after scripts/test.sh's build).
cargo build --quiet --locked --workspace --all-targets
TARGET_DIR=${CARGO_TARGET_DIR:-target}
for f in "${FUNCTIONS[@]}"; do
  mkdir -p "$WORK/code/$f"
  cp "$TARGET_DIR/debug/$f" "$WORK/code/$f/bootstrap"
done
# The template with each function's code at its bootstrap (what `sam build` would produce).
python3 - "$ROOT/infra/template.yaml" "$WORK/template.yaml" "$WORK/code" <<'PY'
import re, sys
src, dst, code = sys.argv[1:]
text = open(src).read()
out, binary = [], None
for line in text.split("\n"):
    m = re.match(r"\s+Binary:\s*(\S+)", line)
    if m:
        binary = m.group(1)
    if binary and re.match(r"\s+CodeUri:", line):
        indent = line[: len(line) - len(line.lstrip())]
        line = f"{indent}CodeUri: {code}/{binary}"
        binary = None
    out.append(line)
open(dst, "w").write("\n".join(out))
PY

# ── 4. moto_server and the simulator on the network ───────────────────────
cleanup() {
  for pid in ${API_PID:-} ${LAMBDA_PID:-}; do
    pkill -TERM -s "$pid" 2>/dev/null || true
  done
  docker rm -f "$MOTO" "$SIM" >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT
docker rm -f "$MOTO" "$SIM" >/dev/null 2>&1 || true
docker network inspect "$NET" >/dev/null 2>&1 || docker network create "$NET" >/dev/null
say "moto_server ($MOTO) and the simulator ($SIM) on docker network $NET; published to 127.0.0.1:$DDB_PORT and :$SIM_PORT"
docker run -d --name "$MOTO" --network "$NET" -p "127.0.0.1:$DDB_PORT:5000" \
  -v "$PY_HOME:$PY_HOME:ro" "$IMAGE" "$MOTO_SERVER" -H 0.0.0.0 -p 5000 >/dev/null
docker run -d --name "$SIM" --network "$NET" -p "127.0.0.1:$SIM_PORT:7070" \
  -v "$ROOT/$TARGET_DIR/debug/iamport-sim:/usr/local/bin/iamport-sim:ro" "$IMAGE" \
  /usr/local/bin/iamport-sim --addr 0.0.0.0:7070 >/dev/null
for port in "$DDB_PORT" "$SIM_PORT"; do
  for _ in $(seq 1 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.5
  done
done
"$TARGET_DIR/debug/local-demo" --create-table --dynamodb "http://127.0.0.1:$DDB_PORT" --table "$TABLE" >/dev/null

# The functions' environment: the services by their container names on the network.
python3 - "$ROOT/infra/env.local.json" "$WORK/env.json" <<PY
import json, sys
env = json.load(open(sys.argv[1]))
env["Parameters"].update({
    "TABLE_NAME": "$TABLE",
    "AWS_ENDPOINT_URL_DYNAMODB": "http://$MOTO:5000",
    "AWS_ENDPOINT_URL_KMS": "http://$MOTO:5000",
    "IAMPORT_BASE_URL": "http://$SIM:7070",
    "IAMPORT_TIMEOUT_MS": "3000",
    "IAMPORT_CONNECT_TIMEOUT_MS": "1000",
    "CALLBACK_URL": "http://127.0.0.1:$API_PORT/billing/callback",
    "NOTICE_URL": "",
    "SUCCESS_REDIRECT_URL": "http://127.0.0.1:3000/billing/done",
    "FAILURE_REDIRECT_URL": "http://127.0.0.1:3000/billing/failed",
    "CHARGE_MODE": "single",
    # SAM resolves the queue's !Ref to its logical id, not a URL; single mode needs none.
    "CHARGE_QUEUE_URL": "",
})
json.dump(env, open(sys.argv[2], "w"), ensure_ascii=False, indent=2)
PY
SAM_ARGS=(-t "$WORK/template.yaml" --env-vars "$WORK/env.json" --region "$AWS_REGION"
  --invoke-image "$IMAGE" --skip-pull-image --docker-network "$NET"
  --parameter-overrides "Architecture=x86_64 IamportCredentialsSecretArn=arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:local-AbCdEf SuccessRedirectUrl=http://127.0.0.1:3000/billing/done FailureRedirectUrl=http://127.0.0.1:3000/billing/failed")

# ── 5. every fixture through sam local invoke ─────────────────────────────
function_of() {
  case "$1" in
    prepare* | callback*) echo BillingCallbackFunction ;;
    webhook*) echo PaymentWebhookFunction ;;
    scheduled* | scheduler*) echo ScheduledChargeFunction ;;
    api-*) echo SubscriptionApiFunction ;;
    *) echo "" ;;
  esac
}
say "sam local invoke -e infra/events/<each>.json"
fixtures=(infra/events/*.json)
[ "$SMOKE" = 1 ] && fixtures=(infra/events/scheduler-input.json)
for event in "${fixtures[@]}"; do
  name=$(basename "$event" .json)
  fn=$(function_of "$name")
  [ -n "$fn" ] || die "no function for fixture $event"
  out="$WORK/invoke-$name.json"
  if sam local invoke "$fn" -e "$event" "${SAM_ARGS[@]}" >"$out" 2>"$WORK/invoke-$name.log"; then
    answer=$(tail -1 "$out")
    # HTTP functions answer an API Gateway response; the charge run its report.
    if printf '%s' "$answer" | python3 -c 'import json,sys; a=json.load(sys.stdin); sys.exit(0 if ("statusCode" in a and a["statusCode"] < 500) or "charged" in a else 1)' 2>/dev/null; then
      check 0 "sam local invoke $fn -e $event → $(printf '%s' "$answer" | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a["statusCode"] if "statusCode" in a else "run report: due %s, charged %s" % (a["due"], a["charged"]))')"
    else
      check 1 "sam local invoke $fn -e $event → $answer"
    fi
  else
    check 1 "sam local invoke $fn -e $event failed (see $WORK/invoke-$name.log)"
  fi
done

# ── 6. start-api and start-lambda: a sign-up, its charges, a webhook ──────
say "sam local start-api on 127.0.0.1:$API_PORT and start-lambda on 127.0.0.1:$LAMBDA_PORT"
setsid sam local start-api --host 127.0.0.1 --port "$API_PORT" "${SAM_ARGS[@]}" >"$WORK/start-api.log" 2>&1 &
API_PID=$!
setsid sam local start-lambda --host 127.0.0.1 --port "$LAMBDA_PORT" "${SAM_ARGS[@]}" >"$WORK/start-lambda.log" 2>&1 &
LAMBDA_PID=$!
for port in "$API_PORT" "$LAMBDA_PORT"; do
  for _ in $(seq 1 120); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.5
  done
done
API="http://127.0.0.1:$API_PORT"
SIMU="http://127.0.0.1:$SIM_PORT"
prepared=$(curl -sS -X POST "$API/billing/prepare" -H 'content-type: application/json' \
  -d '{"user_id":"user-sam","plan":{"amount":9900,"name":"월간 구독"}}')
sub_id=$(printf '%s' "$prepared" | python3 -c 'import json,sys; print(json.load(sys.stdin)["subscription_id"])' 2>/dev/null || true)
if [ -n "$sub_id" ]; then check 0 "POST /billing/prepare through start-api → subscription ${sub_id:-none}"; else check 1 "POST /billing/prepare through start-api → subscription ${sub_id:-none}"; fi
window=$(printf '%s' "$prepared" | python3 -c '
import json, sys, urllib.parse
p = json.load(sys.stdin)["request_pay"]
print(urllib.parse.urlencode({k: str(v) for k, v in p.items()}))')
callback=$(curl -sS -o /dev/null -w '%{redirect_url}' "$SIMU/window?$window")
case "$callback" in "$API/billing/callback?"*) check 0 "the simulator's window redirects to the callback on start-api" ;; *) check 1 "window redirect: $callback" ;; esac
landed=$(curl -sS -o /dev/null -w '%{redirect_url}' "$callback")
case "$landed" in *"/billing/done?subscription_id=$sub_id&first_charge=paid") check 0 "callback 302 → $landed" ;; *) check 1 "callback landed on $landed" ;; esac
again=$(curl -sS -o /dev/null -w '%{redirect_url}' "$callback")
case "$again" in *"/billing/done?subscription_id=$sub_id&first_charge=paid") check 0 "the callback reloaded answers the same page (its first charge as stored), no second charge" ;; *) check 1 "reload landed on $again" ;; esac
paid() { curl -sS "$SIMU/__sim/ledger" | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p["status"]=="paid" and p.get("customer_uid_usage")=="payment"))'; }
if [ "$(paid)" = 1 ]; then check 0 "the simulator's ledger: one paid charge after the sign-up"; else check 1 "the simulator's ledger: one paid charge after the sign-up"; fi

if [ "$SMOKE" = 0 ]; then
  # A second customer, whose card the simulator declines from now on.
  prepared2=$(curl -sS -X POST "$API/billing/prepare" -H 'content-type: application/json' \
    -d '{"user_id":"user-sam-2","plan":{"amount":14900,"name":"프로 월간"}}')
  sub2=$(printf '%s' "$prepared2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["subscription_id"])' 2>/dev/null || true)
  key2=$(printf '%s' "$prepared2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_pay"]["customer_uid"])' 2>/dev/null || true)
  window2=$(printf '%s' "$prepared2" | python3 -c '
import json, sys, urllib.parse
p = json.load(sys.stdin)["request_pay"]
print(urllib.parse.urlencode({k: str(v) for k, v in p.items()}))')
  landed2=$(curl -sS -o /dev/null -w '%{redirect_url}' "$(curl -sS -o /dev/null -w '%{redirect_url}' "$SIMU/window?$window2")")
  case "$landed2" in *"subscription_id=$sub2&first_charge=paid") check 0 "a second customer signs up: $landed2" ;; *) check 1 "second sign-up landed on $landed2" ;; esac
  curl -sS -X POST "$SIMU/__sim/decline" -H 'content-type: application/json' \
    -d "{\"customer_uid\":\"$key2\",\"reason\":\"잔액부족\"}" >/dev/null
  month=$(python3 -c 'import datetime; print((datetime.datetime.now(datetime.timezone.utc)+datetime.timedelta(days=32)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
  run=$(curl -sS -X POST "http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/ScheduledChargeFunction/invocations" \
    -d "{\"scheduled_time\":\"$month\",\"execution_id\":\"sam-run-1\"}")
  counts=$(printf '%s' "$run" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["charged"], r["declined"])' 2>/dev/null || echo "? ?")
  if [ "$counts" = "1 1" ]; then check 0 "a charge run a month later through start-lambda: charged 1, declined 1"; else check 1 "the month's run: charged/declined $counts ($run)"; fi
  if [ "$(paid)" = 3 ]; then check 0 "the simulator's ledger: three paid charges (two sign-ups, one month)"; else check 1 "the simulator's ledger: $(paid) paid charges, not 3"; fi
  status2=$(curl -sS "$API/subscriptions/$sub2" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["status"], v["next_charge_at"])' 2>/dev/null || echo "?")
  case "$status2" in "past_due "*) check 0 "the declined customer is in dunning: $status2" ;; *) check 1 "the declined customer: $status2" ;; esac
  rerun=$(curl -sS -X POST "http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/ScheduledChargeFunction/invocations" \
    -d "{\"scheduled_time\":\"$month\",\"execution_id\":\"sam-run-1\"}")
  if [ "$(paid)" = 3 ]; then check 0 "the same run again charges nothing more"; else check 1 "the same run again: $(paid) paid charges ($rerun)"; fi
  last=$(curl -sS "$SIMU/__sim/ledger" | python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin) if p["status"] == "paid" and p.get("customer_uid_usage") == "payment"][-1]
print(json.dumps({"imp_uid": p["imp_uid"], "merchant_uid": p["merchant_uid"], "status": "paid"}))')
  muid=$(printf '%s' "$last" | python3 -c 'import json,sys; print(json.load(sys.stdin)["merchant_uid"])')
  hook=$(curl -sS -X POST "$API/webhooks/iamport" -H 'content-type: application/json' -d "$last")
  case "$hook" in *"already recorded"*) check 0 "a webhook for that charge through start-api: $hook" ;; *) check 1 "webhook answered $hook" ;; esac
  view=$(curl -sS "$API/subscriptions/$sub_id")
  status=$(printf '%s' "$view" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["status"], v["paid_through"])' 2>/dev/null || echo "$view")
  case "$status" in "active "*) check 0 "GET /subscriptions/$sub_id through start-api: $status" ;; *) check 1 "subscription view: $status" ;; esac
  # The merchant's API: a partial refund (asked twice with one key), then a cancel at period end.
  for _ in 1 2; do
    refund=$(curl -sS -X POST "$API/charges/$muid/refund" -H 'content-type: application/json' \
      -H 'idempotency-key: sam-refund-1' -d '{"amount":3000,"reason":"sam local"}')
  done
  refunded=$(curl -sS "$SIMU/__sim/ledger" | python3 -c "
import json, sys
print(sum(p['cancel_amount'] for p in json.load(sys.stdin) if p['merchant_uid'] == '$muid'))")
  if [ "$refunded" = 3000 ]; then check 0 "a refund of 3,000 KRW asked twice refunds once (simulator: $refunded)"; else check 1 "refund: simulator shows $refunded ($refund)"; fi
  cancel=$(curl -sS -X POST "$API/subscriptions/$sub_id/cancel" -H 'content-type: application/json' \
    -d '{"at":"period_end","reason":"sam local"}')
  case "$cancel" in *'"cancel_at_period_end":true'*) check 0 "cancel at period end through start-api" ;; *) check 1 "cancel answered $cancel" ;; esac
fi

echo
say "sam local: $PASSED checks passed, $FAILED failed (logs: .local/sam/)"
[ "$FAILED" = 0 ]
