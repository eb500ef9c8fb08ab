#!/usr/bin/env bash
# The slower infra check: `sam build` must produce a bootstrap for every function (arm64, release,
# through cargo-lambda). Not part of scripts/test.sh: a cold build takes ~5 minutes on 2 cores.
# SAM builds in the source tree (RustCargoLambdaBuilder), so it reuses target/ between functions.
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_REGION=ap-northeast-2 AWS_DEFAULT_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test SAM_CLI_TELEMETRY=0
NEED_CARGO_LAMBDA=1 scripts/setup.sh
started=$(date +%s)
sam build -t infra/template.yaml
for f in BillingCallbackFunction PaymentWebhookFunction ScheduledChargeFunction; do
  boot=".aws-sam/build/$f/bootstrap"
  [ -x "$boot" ] || { echo "sam-build-check: $boot missing" >&2; exit 1; }
  file "$boot" 2>/dev/null | grep -q "aarch64" || { echo "sam-build-check: $boot is not arm64" >&2; exit 1; }
  printf 'sam-build-check: %-24s %s bytes\n' "$f" "$(stat -c %s "$boot")"
done
echo "sam-build-check: OK in $(( $(date +%s) - started )) s"
