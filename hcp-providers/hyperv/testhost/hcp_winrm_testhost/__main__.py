"""Runs the test host: `python -m hcp_winrm_testhost [--hosts N] [--port P] [--cluster NAME]`.

Prints one JSON line with each host's name, port and URL and the credentials, then a
human-readable summary, and serves until interrupted."""

import argparse
import json
import signal
import sys
import threading

from . import start


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m hcp_winrm_testhost", description=__doc__)
    ap.add_argument("--hosts", type=int, default=1, help="how many Hyper-V hosts (one port each)")
    ap.add_argument("--port", type=int, default=0, help="first port (0: free ports)")
    ap.add_argument("--username", default="hcp")
    ap.add_argument("--password", default="hcp-test-password")
    ap.add_argument("--cluster", default=None, help="make every host a node of this failover cluster")
    ap.add_argument("--max-shells-per-user", type=int, default=5)
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    ap.add_argument("--tls-cert", default=None,
                    help="serve HTTPS with this certificate (PEM; with --tls-key) instead of a self-signed one")
    ap.add_argument("--tls-key", default=None, help="the private key (PEM) of --tls-cert")
    ap.add_argument("--ntlm-binding", choices=["connection", "any"], default="connection",
                    help="connection: an NTLM handshake must finish on its connection (HTTP.sys); "
                         "any: also accept the Authenticate message on another connection")
    ap.add_argument("--copy-seconds", type=float, default=0.6, help="how long a VHDX copy takes")
    ap.add_argument("--kerberos-keytab", default=None,
                    help="also accept Kerberos (SPNEGO Negotiate, raw or wrapped) with the service "
                         "keys of this keytab (HTTP/<host>@REALM); KRB5_CONFIG names the realm's KDC")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.kerberos_keytab:
        # pyspnego's Negotiate acceptor uses GSSAPI (python-gssapi over MIT krb5) for Kerberos;
        # MIT reads the acceptor's keys from KRB5_KTNAME.
        import os
        os.environ["KRB5_KTNAME"] = "FILE:" + os.path.abspath(args.kerberos_keytab)
    listeners, _servers = start(args.hosts, args.username, args.password, args.cluster, args.port,
                                args.max_shells_per_user, args.copy_seconds, args.tls, args.ntlm_binding,
                                (args.tls_cert, args.tls_key) if args.tls_cert else None)
    info = {
        "hosts": [{"name": l.name, "port": l.port, "url": f"{l.scheme}://127.0.0.1:{l.port}/wsman"} for l in listeners],
        "certificate": listeners[0].cert_path if listeners else None,
        "control": f"http://127.0.0.1:{listeners[0].control_port}/hcp-testhost" if listeners else None,
        "username": args.username,
        "password": args.password,
    }
    print(json.dumps(info), flush=True)
    for l in listeners:
        print(f"HCP WinRM test host {l.name}: {l.scheme}://127.0.0.1:{l.port}/wsman", file=sys.stderr)
    print(f"credentials: {args.username} / {args.password} (NTLM or Basic)", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
