#!/usr/bin/env bash
# The validators the deploy/ tests run, fetched from Debian's archive if missing:
#   docker-compose  package docker-compose (compose v1; `config` validates a file offline).
#                   Installed with apt-get (needs root or sudo); it starts no service.
#   promtool        from package prometheus: `apt-get download` + `dpkg-deb -x`, and only the
#                   promtool binary is kept, in var/tools/ (no root; the Prometheus server in
#                   the same package is neither installed nor started).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/var/tools"

if ! command -v promtool >/dev/null 2>&1 && [[ ! -x "$tools/promtool" ]]; then
  command -v apt-get >/dev/null 2>&1 || { echo "the deploy tests need promtool (Prometheus)" >&2; exit 1; }
  echo "fetching promtool (Debian package prometheus) into var/tools/..."
  work=$(mktemp -d)
  chmod 755 "$work"  # apt downloads as user _apt
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download prometheus >/dev/null && dpkg-deb -x prometheus_*.deb extracted)
  mkdir -p "$tools"
  install -m 755 "$work/extracted/usr/bin/promtool" "$tools/promtool"
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { echo "the deploy tests need docker-compose (v1)" >&2; exit 1; }
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "installing docker-compose needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "installing docker-compose (Debian package) for the deploy tests..."
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends docker-compose >/dev/null
fi
