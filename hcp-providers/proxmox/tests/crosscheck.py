"""The independent client for cross-checks: proxmoxer (PyPI) against the same fakepve HCP uses.

    python crosscheck.py '{"url": ..., "token_id": ..., "token_secret_file": ..., "ca_file": ...,
                           "args": {"op": ...}}'

ops: "vm" (node, vmid) prints the VM's status and config as PVE reports them; "create" (node,
vmid, name, cores, memory) creates a VM and waits for its task; "list" (node) prints the node's VMs;
"snapshots" (node, vmid) prints PVE's snapshot list as it comes (the pseudo entry `current`
included); "snapshot" (node, vmid, snapname) takes a disk-only snapshot and waits for its task.
"""

import json
import sys
import time
import urllib.parse

from proxmoxer import ProxmoxAPI


def api(conf):
    url = urllib.parse.urlparse(conf['url'])
    user, token = conf['token_id'].split('!')
    with open(conf['token_secret_file']) as f:
        secret = f.read().strip()
    return ProxmoxAPI(url.hostname, port=url.port, user=user, token_name=token, token_value=secret,
                      verify_ssl=conf['ca_file'], service='PVE')


def wait(px, node, upid):
    for _ in range(600):
        st = px.nodes(node).tasks(upid).status.get()
        if st['status'] == 'stopped':
            return st['exitstatus']
        time.sleep(0.05)
    raise SystemExit('task did not end: ' + upid)


def main():
    conf = json.loads(sys.argv[1])
    args = conf['args']
    px = api(conf)
    op = args['op']
    if op == 'vm':
        vm = px.nodes(args['node']).qemu(args['vmid'])
        out = {'status': vm.status.current.get(), 'config': vm.config.get()}
    elif op == 'create':
        upid = px.nodes(args['node']).qemu.post(vmid=args['vmid'], name=args['name'], cores=args['cores'],
                                                memory=args['memory'], net0='virtio,bridge=vmbr0')
        out = {'exitstatus': wait(px, args['node'], upid)}
    elif op == 'list':
        out = {'vms': px.nodes(args['node']).qemu.get()}
    elif op == 'snapshots':
        out = {'snapshots': px.nodes(args['node']).qemu(args['vmid']).snapshot.get()}
    elif op == 'snapshot':
        upid = px.nodes(args['node']).qemu(args['vmid']).snapshot.post(snapname=args['snapname'])
        out = {'exitstatus': wait(px, args['node'], upid)}
    else:
        raise SystemExit('unknown op ' + op)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
