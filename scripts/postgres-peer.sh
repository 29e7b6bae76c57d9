#!/usr/bin/env bash
# Makes sure the store tests' peer is up: PostgreSQL on 127.0.0.1:5432 with a database `test`
# that the user `postgres` reaches over TCP without a password (trust on loopback only).
# Installs Debian's postgresql when it is missing, starts the cluster when it is stopped.
# Idempotent; exits non-zero with a message when PostgreSQL cannot be made usable.
set -euo pipefail

usable() {
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null &&
    psql -h 127.0.0.1 -p 5432 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1
}

if command -v psql >/dev/null 2>&1 && usable; then
  echo "PostgreSQL is up on 127.0.0.1:5432 (database test)"
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "installing PostgreSQL (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql postgresql-client
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$version/main
[ -d "$conf" ] || { echo "postgres-peer: no cluster configuration in $conf" >&2; exit 1; }

# Loopback only, port 5432, and trust for loopback TCP connections (tests only).
changed=0
if ! grep -Eq "^listen_addresses *= *'127\.0\.0\.1'" "$conf/postgresql.conf"; then
  echo "listen_addresses = '127.0.0.1'" >>"$conf/postgresql.conf"; changed=1
fi
if ! grep -Eq '^port *= *5432' "$conf/postgresql.conf"; then
  echo "port = 5432" >>"$conf/postgresql.conf"; changed=1
fi
if ! grep -Eq '^host +all +all +127\.0\.0\.1/32 +trust' "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; changed=1
fi

if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
  if [ "$changed" = 1 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  fi
else
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi

for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p 5432 || {
  echo "postgres-peer: PostgreSQL $version does not answer on 127.0.0.1:5432; see /var/log/postgresql/postgresql-$version-main.log" >&2
  exit 1
}

if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
fi

usable || {
  echo "postgres-peer: PostgreSQL answers but user postgres cannot use database test on 127.0.0.1:5432" >&2
  exit 1
}
echo "PostgreSQL $version is up on 127.0.0.1:5432 (database test)"
