#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster if it does not answer on 127.0.0.1:5432.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ready; then exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432 and pg_ctlcluster is not installed." >&2
  echo "Install PostgreSQL (Debian: apt-get install postgresql) or point the tests elsewhere." >&2
  exit 1
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version..."
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
echo "PostgreSQL $version did not become ready within 30s" >&2
exit 1
