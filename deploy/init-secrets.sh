#!/usr/bin/env bash
# Create what docker-compose.yml needs and git must never see, without overwriting anything:
#   .env                        random PostgreSQL and Grafana passwords, a KRaft cluster id
#   hub.env                     from hub.env.example (add your connectors' secrets there)
#   secrets/prometheus-api-key  a random API key Prometheus scrapes the hub's /metrics with
#   secrets/api-keys.toml       the hub's API keys file: that key's SHA-256, role INTEGRATION_ADMIN
#   config/sites.toml           the demo site configuration, as a starting point to edit
# Needs openssl and sha256sum. Run from anywhere; files land next to this script.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
random() { openssl rand -base64 "$1" | tr '+/' '-_' | tr -d '=\n'; }

if [[ ! -e .env ]]; then
  sed -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$(random 24)|" \
      -e "s|^GRAFANA_ADMIN_PASSWORD=.*|GRAFANA_ADMIN_PASSWORD=$(random 24)|" \
      -e "s|^KAFKA_CLUSTER_ID=.*|KAFKA_CLUSTER_ID=$(random 16)|" .env.example > .env
  echo "created .env"
fi
[[ -e hub.env ]] || { cp hub.env.example hub.env; echo "created hub.env"; }

mkdir -p secrets config
if [[ ! -e secrets/prometheus-api-key ]]; then
  random 32 > secrets/prometheus-api-key
  digest=$(sha256sum < secrets/prometheus-api-key | cut -d' ' -f1)
  if [[ ! -e secrets/api-keys.toml ]]; then
    printf '# API keys of the hub, by SHA-256 (see trace_api/auth.py). Add your users here.\n' \
      > secrets/api-keys.toml
  fi
  printf '\n[users.prometheus]\nrole = "INTEGRATION_ADMIN"\nkey_sha256 = "%s"\n' "$digest" \
    >> secrets/api-keys.toml
  echo "created secrets/prometheus-api-key and its entry in secrets/api-keys.toml"
fi
# read inside the containers by other users (prometheus: 65534, lothub: 10001); the secrets
# folder itself stays private to its owner on this host
chmod 700 secrets
chmod 644 secrets/prometheus-api-key secrets/api-keys.toml
if [[ ! -e config/sites.toml ]]; then
  cp ../lothub/sites.demo.toml config/sites.toml
  chmod 644 config/sites.toml
  echo "created config/sites.toml from the demo configuration: edit it for your plants"
fi
