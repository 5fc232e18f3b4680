#!/usr/bin/env bash
# The UI's end-to-end tests drive Debian's chromium through Playwright (Playwright's own
# browser download is not used). Install it with apt-get if /usr/bin/chromium is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "/usr/bin/chromium is missing and apt-get is not available: install Chromium so that" >&2
  echo "/usr/bin/chromium exists (the UI tests in tests/integration/test_ui.py launch it)." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "/usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "installing Debian's chromium for the UI tests (apt-get install -y chromium)..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
