#!/bin/sh
# Entry point of docker compose's superset service: the same provisioning as
# scripts/superset.sh, then the image's own server script (gunicorn on 8088).
# Everything lives in the superset_home volume, so a restart keeps the
# secret key, the admin user and SQLite metadata; the dashboard and the
# ClickHouse database are re-imported from /app/adstream (./superset) on
# every start.
set -eu
: "${SUPERSET_HOME:=/app/superset_home}"
export SUPERSET_HOME
mkdir -p "$SUPERSET_HOME"
key="$SUPERSET_HOME/secret_key"
if [ -z "${SUPERSET_SECRET_KEY:-}" ]; then
  # generated once per install (per volume), like scripts/superset.sh does
  if [ ! -s "$key" ]; then
    (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(48))' >"$key")
  fi
  SUPERSET_SECRET_KEY="$(cat "$key")"
  export SUPERSET_SECRET_KEY
fi
superset db upgrade
superset init
python /app/adstream/provision.py
exec /app/docker/entrypoints/run-server.sh
