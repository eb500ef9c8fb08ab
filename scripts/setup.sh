#!/usr/bin/env bash
# Installs what the tests and the local stack need, by package name, only
# when it is missing. Safe to run again. Used by scripts/test.sh (and so
# .ci/run), scripts/bench.sh and scripts/cold-start.sh (NEED_CARGO_LAMBDA=1).
set -euo pipefail

need_pip=()
command -v moto_server >/dev/null 2>&1 || need_pip+=("moto[server]")
command -v cfn-lint >/dev/null 2>&1 || need_pip+=("cfn-lint")
command -v sam >/dev/null 2>&1 || need_pip+=("aws-sam-cli")
if [ "${NEED_CARGO_LAMBDA:-0}" = 1 ] && ! command -v cargo-lambda >/dev/null 2>&1; then
  need_pip+=("cargo-lambda")
fi
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "setup: pip install ${need_pip[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
  # pyenv puts new console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi
# The browser test (examples/merchant-web/tests/browser.rs) drives Debian's
# headless Chromium through chromedriver.
if ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: apt-get install chromium chromium-driver"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: chromedriver is missing and there is no apt-get: install Chromium and its driver" >&2
  fi
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done
