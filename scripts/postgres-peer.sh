#!/usr/bin/env bash
# Makes sure the store tests' peer is up: PostgreSQL on 127.0.0.1:5432 with a database `test`
# that the user `postgres` reaches over TCP without a password (trust on loopback only), and a
# database `test_tls` it reaches over TLS only (the server's certificate, for localhost and
# 127.0.0.1, is signed by a test CA in /var/lib/hcp/pg-tls/ca.crt; other-ca.crt is a CA that
# signed nothing the server shows).
# Installs Debian's postgresql when it is missing, starts the cluster when it is stopped.
# Idempotent; exits non-zero with a message when PostgreSQL cannot be made usable.
set -euo pipefail

tls_dir=/var/lib/hcp/pg-tls

usable() {
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null &&
    psql -h 127.0.0.1 -p 5432 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1 &&
    [ -s "$tls_dir/ca.crt" ] && [ -s "$tls_dir/other-ca.crt" ] &&
    psql "host=127.0.0.1 port=5432 user=postgres dbname=test_tls sslmode=verify-full sslrootcert=$tls_dir/ca.crt" \
      -Atc 'SELECT 1' >/dev/null 2>&1
}

if command -v psql >/dev/null 2>&1 && usable; then
  echo "PostgreSQL is up on 127.0.0.1:5432 (database test; test_tls over TLS only)"
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

# The test CA and the server's certificate (localhost, 127.0.0.1), made once.
if [ ! -s "$tls_dir/server.crt" ] || [ ! -s "$tls_dir/other-ca.crt" ]; then
  echo "making the test CA and PostgreSQL's server certificate in $tls_dir"
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=HCP test $ca" \
        -keyout "$ca.key" -out "$ca.crt" 2>/dev/null
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext ca.srl
  )
  chown postgres:postgres "$tls_dir/server.key" "$tls_dir/server.crt"
  chmod 600 "$tls_dir/server.key"
  chmod 644 "$tls_dir"/*.crt
fi

# Loopback only, port 5432, and trust for loopback TCP connections (tests only).
changed=0
if ! grep -Eq "^ssl_cert_file *= *'$tls_dir/server.crt'" "$conf/postgresql.conf"; then
  printf "ssl = on\nssl_cert_file = '%s/server.crt'\nssl_key_file = '%s/server.key'\n" \
    "$tls_dir" "$tls_dir" >>"$conf/postgresql.conf"; changed=1
fi
if ! grep -Eq "^listen_addresses *= *'127\.0\.0\.1'" "$conf/postgresql.conf"; then
  echo "listen_addresses = '127.0.0.1'" >>"$conf/postgresql.conf"; changed=1
fi
if ! grep -Eq '^port *= *5432' "$conf/postgresql.conf"; then
  echo "port = 5432" >>"$conf/postgresql.conf"; changed=1
fi
if ! grep -Eq '^host +all +all +127\.0\.0\.1/32 +trust' "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"; changed=1
fi
# test_tls: TLS or nothing (these lines come first: the first matching line wins).
if ! grep -Eq '^hostnossl +test_tls ' "$conf/pg_hba.conf"; then
  sed -i '1i hostssl test_tls all 127.0.0.1/32 trust\nhostnossl test_tls all 127.0.0.1/32 reject' \
    "$conf/pg_hba.conf"; changed=1
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

for db in test test_tls; do
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
  fi
done

usable || {
  echo "postgres-peer: PostgreSQL answers but user postgres cannot use database test (plain) or test_tls (TLS, $tls_dir/ca.crt) on 127.0.0.1:5432" >&2
  exit 1
}
echo "PostgreSQL $version is up on 127.0.0.1:5432 (database test; test_tls over TLS only)"
