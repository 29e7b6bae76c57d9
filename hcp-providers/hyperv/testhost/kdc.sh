#!/usr/bin/env bash
# Starts (or reuses) a real MIT Kerberos KDC for the WinRM test host's Kerberos tests, on
# loopback only, with its own realm HCP.TEST, and prints its settings as one JSON line.
# Idempotent: installs Debian's packages when missing, creates the database and keytabs once,
# and starts each KDC process only when it is not already answering.
#
#   krb5kdc on 127.0.0.1:$HCP_KDC_PORT (default 18888)        the realm's KDC
#   krb5kdc on 127.0.0.1:$HCP_KDC_PORT+1, its clock 20m ahead  (faketime) for the clock-skew test
#
# Principals: hcp@HCP.TEST (HCP's client keytab), HTTP/localhost@HCP.TEST (the test host's
# keytab), pyclient@HCP.TEST (password, for pypsrp), stale@HCP.TEST (a keytab whose key was
# changed afterwards: the wrong-keytab test).
set -euo pipefail
dir="${HCP_KDC_DIR:-$HOME/.cache/hcp-kdc}"
port="${HCP_KDC_PORT:-18888}"
skew_port=$((port + 1))
realm=HCP.TEST

need=()
for p in krb5-kdc krb5-admin-server krb5-user libkrb5-dev libclang-dev pkg-config faketime; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in krb5kdc kdb5_util kadmin.local kinit faketime; do
    command -v "$tool" >/dev/null || { echo "kdc.sh: $tool is missing after the install" >&2; exit 1; }
done

mkdir -p "$dir"
write_conf() { # file kdc-port
    cat >"$1" <<EOF
[libdefaults]
    default_realm = $realm
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    ticket_lifetime = 10h
[realms]
    $realm = {
        kdc = 127.0.0.1:$2
    }
[domain_realm]
    localhost = $realm
EOF
}
write_conf "$dir/krb5.conf" "$port"
write_conf "$dir/krb5-skewed.conf" "$skew_port"
write_kdc_conf() { # file kdc-port
    cat >"$1" <<EOF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$2
    kdc_tcp_listen = 127.0.0.1:$2
[realms]
    $realm = {
        database_name = $dir/principal
        key_stash_file = $dir/stash
        acl_file = $dir/kadm5.acl
        max_life = 10h
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }
[logging]
    kdc = FILE:$dir/kdc-$2.log
EOF
}
write_kdc_conf "$dir/kdc.conf" "$port"
write_kdc_conf "$dir/kdc-skewed.conf" "$skew_port"
: >"$dir/kadm5.acl"
export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf"

if [ ! -f "$dir/.created" ]; then
    rm -f "$dir"/principal* "$dir/stash" "$dir"/*.keytab
    kdb5_util -r "$realm" create -s -P "hcp-kdc-master-$$-$RANDOM" >/dev/null
    kadmin.local 2>/dev/null -q "addprinc -randkey hcp" >/dev/null
    kadmin.local 2>/dev/null -q "addprinc -randkey HTTP/localhost" >/dev/null
    kadmin.local 2>/dev/null -q "addprinc -pw pyclient-Pw-1 pyclient" >/dev/null
    kadmin.local 2>/dev/null -q "addprinc -randkey stale" >/dev/null
    kadmin.local -q "ktadd -k $dir/hcp.keytab hcp" >/dev/null
    kadmin.local -q "ktadd -k $dir/http.keytab HTTP/localhost" >/dev/null
    kadmin.local -q "ktadd -k $dir/stale.keytab stale" >/dev/null
    # The stale keytab's key no longer matches the KDC's: a wrong keytab.
    kadmin.local -q "cpw -randkey stale" >/dev/null
    touch "$dir/.created"
fi

answering() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
start_kdc() { # port profile pidfile [faketime offset]
    if answering "$1"; then
        return
    fi
    if [ -n "${4:-}" ]; then
        # In the foreground under faketime (which waits for its child), detached from us.
        KRB5_KDC_PROFILE="$2" setsid faketime -f "$4" krb5kdc -n -P "$3" -r "$realm" \
            </dev/null >/dev/null 2>&1 &
    else
        KRB5_KDC_PROFILE="$2" krb5kdc -P "$3" -r "$realm" </dev/null >/dev/null 2>&1
    fi
    for _ in $(seq 1 50); do
        answering "$1" && return
        sleep 0.1
    done
    echo "kdc.sh: the KDC on 127.0.0.1:$1 did not start; see $dir/kdc-$1.log" >&2
    exit 1
}
start_kdc "$port" "$dir/kdc.conf" "$dir/kdc.pid"
start_kdc "$skew_port" "$dir/kdc-skewed.conf" "$dir/kdc-skewed.pid" "+20m"

printf '{"dir": "%s", "realm": "%s", "port": %s, "skewed_port": %s, "krb5_conf": "%s", "skewed_krb5_conf": "%s", "client_keytab": "%s", "service_keytab": "%s", "stale_keytab": "%s", "py_user": "pyclient", "py_password": "pyclient-Pw-1"}\n' \
    "$dir" "$realm" "$port" "$skew_port" "$dir/krb5.conf" "$dir/krb5-skewed.conf" \
    "$dir/hcp.keytab" "$dir/http.keytab" "$dir/stale.keytab"
