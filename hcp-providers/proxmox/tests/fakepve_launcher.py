"""Starts fakepve (a fake of the Proxmox VE API, AGPL: run as a separate process, never copied) for
HCP's tests, on a free loopback port, with an API token and a certificate of its own.

    python fakepve_launcher.py DIR [--port P] [--time-scale S] [--nodes pve1,pve2]

Writes DIR/token (the token secret), DIR/password (root@pam's password, for ticket logins) and
DIR/fakepve.crt (the certificate, which is its own CA), seeds template VMs (ubuntu-24.04 with a cloud-init drive, debian-12 without), then prints one JSON
line on stdout:

    {"url": "https://127.0.0.1:PORT", "token_id": "root@pam!ci", "token_secret_file": ...,
     "username": "root@pam", "password_file": ..., "ca_file": ..., "fingerprint": "AB:CD:..."}

and serves until stdin closes (`--port` 0, the default, takes a free port; `--serve` keeps
serving after stdin closes, for `hcp serve` by hand). Each further stdin line is a JSON command run inside the server
(fault injection for tests); each gets one JSON line back, {"ok": true} or {"error": "..."}:

    {"op": "fail", "method": "POST", "suffix": "/clone", "status": 500, "message": "...", "times": 3}
    {"op": "fail_error", "method": "POST", "suffix": "...", "error": "name", "times": 1}
    {"op": "clear_failures"}
    {"op": "hold_config_lock", "vmid": 9000, "secs": 5}
    {"op": "set", "attr": "time_scale", "value": 0.01}   (also lock_wait, ticket_ttl in seconds)
    {"op": "revoke_tickets"}
    {"op": "latency", "secs": 3}   (PVE seconds before every answer, scaled by time_scale)
    {"op": "add_vm", "vmid": 500, "name": "x", "node": "pve1", "status": "stopped", "config": {}}
    {"op": "vm_attr", "vmid": 500, "attr": "shutdown_secs", "value": 90}
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import uuid

from fakepve import FakePve
from fakepve.certs import make_cert

TOKEN_ID = 'root@pam!ci'
USER = 'root@pam'
TEMPLATES = [
    # vmid, name, disk, cloud-init drive
    (9000, 'ubuntu-24.04', 'local-lvm:base-9000-disk-0,size=2G', 'local-lvm:vm-9000-cloudinit,media=cdrom'),
    (9001, 'debian-12', 'local-lvm:base-9001-disk-0,size=4G', None),
]


def seed(pve, nodes):
    for n in nodes:
        pve.add_node(n)
    for vmid, name, disk, cloudinit in TEMPLATES:
        config = {'scsi0': disk, 'net0': 'virtio=BC:24:11:00:00:01,bridge=vmbr0', 'cores': 1, 'memory': 512,
                  'ostype': 'l26', 'scsihw': 'virtio-scsi-single', 'template': 1}
        if cloudinit:
            config['ide2'] = cloudinit
        pve.add_vm(vmid, name, node=nodes[0], template=True, config=config)


async def command(pve, line):
    cmd = json.loads(line)
    op = cmd.pop('op')
    if op == 'fail':
        pve.fail(cmd['method'], cmd['suffix'], cmd['status'], cmd['message'], times=cmd.get('times'))
    elif op == 'fail_error':
        pve.fail(cmd['method'], cmd['suffix'], error=cmd['error'], times=cmd.get('times'))
    elif op == 'clear_failures':
        pve.failures.clear()
    elif op == 'hold_config_lock':
        await pve.hold_config_lock(cmd['vmid'], cmd['secs'])
    elif op == 'set':
        if cmd['attr'] not in ('time_scale', 'lock_wait', 'shutdown_default_timeout', 'ticket_ttl'):
            raise ValueError('cannot set ' + cmd['attr'])
        setattr(pve, cmd['attr'], cmd['value'])
    elif op == 'add_vm':
        pve.add_vm(cmd['vmid'], cmd['name'], node=cmd.get('node', 'pve1'), status=cmd.get('status', 'stopped'),
                   config=cmd.get('config', {}), template=cmd.get('template', False))
    elif op == 'vm_attr':
        if cmd['attr'] not in ('shutdown_secs', 'start_secs', 'stop_secs', 'start_error', 'acpi'):
            raise ValueError('cannot set ' + cmd['attr'])
        setattr(pve.vm(cmd['vmid']), cmd['attr'], cmd['value'])
    elif op == 'latency':
        pve.network['latency'] = float(cmd['secs'])
    elif op == 'revoke_tickets':
        pve.revoke_tickets()
    elif op == 'requests':
        return {'ok': True, 'requests': [[m, p] for (m, p, _b) in pve.requests]}
    else:
        raise ValueError('unknown op ' + op)
    return {'ok': True}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dir')
    ap.add_argument('--time-scale', type=float, default=0.0)
    ap.add_argument('--nodes', default='pve1,pve2')
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--serve', action='store_true')
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    certfile, keyfile, der = make_cert(args.dir, hosts=('127.0.0.1',))
    secret = str(uuid.uuid4())
    token_file = os.path.join(args.dir, 'token')
    with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as out:
        out.write(secret + '\n')
    password = 'pw ' + uuid.uuid4().hex
    password_file = os.path.join(args.dir, 'password')
    with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as out:
        out.write(password + '\n')
    pve = FakePve(host='127.0.0.1', port=args.port)
    pve.user, pve.password = USER, password
    pve.time_scale = args.time_scale
    pve.apitokens[TOKEN_ID] = secret
    seed(pve, args.nodes.split(','))
    await pve.start(certfile, keyfile)
    digest = hashlib.sha256(der).hexdigest().upper()
    print(json.dumps({
        'url': pve.url, 'token_id': TOKEN_ID, 'token_secret_file': token_file,
        'username': USER, 'password_file': password_file, 'ca_file': certfile,
        'fingerprint': ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2)),
    }), flush=True)
    if args.serve:
        await asyncio.Event().wait()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            reply = await command(pve, line)
        except Exception as e:  # reported to the test, which fails on it
            reply = {'error': '{0}: {1}'.format(type(e).__name__, e)}
        print(json.dumps(reply), flush=True)
    await pve.stop()


if __name__ == '__main__':
    asyncio.run(main())
