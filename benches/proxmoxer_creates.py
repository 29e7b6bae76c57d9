"""The proxmoxer side of benches/proxmox.rs: the same create as HCP's Proxmox provider (next id,
linked clone of template 9000 and its task, config, disk resize, start and its task), N times,
serially or on T threads. Prints {"seconds": S, "vmids": [...]}.

    python proxmoxer_creates.py '{"url", "token_id", "token_secret_file", "ca_file"}' N T PREFIX
"""

import json
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

NODE = 'pve1'
TEMPLATE = 9000


def api(conf):
    url = urllib.parse.urlparse(conf['url'])
    user, token = conf['token_id'].split('!')
    with open(conf['token_secret_file']) as f:
        secret = f.read().strip()
    return ProxmoxAPI(url.hostname, port=url.port, user=user, token_name=token, token_value=secret,
                      verify_ssl=conf['ca_file'], service='PVE')


def wait(px, upid):
    while True:
        st = px.nodes(NODE).tasks(upid).status.get()
        if st['status'] == 'stopped':
            if st.get('exitstatus') != 'OK':
                raise RuntimeError(st.get('exitstatus'))
            return
        time.sleep(0.05)


def create(px, name):
    while True:
        vmid = int(px.cluster.nextid.get())
        try:
            upid = px.nodes(NODE).qemu(TEMPLATE).clone.post(newid=vmid, name=name, full=0)
        except ResourceException as e:
            if 'already exists' in str(e):
                continue
            raise
        wait(px, upid)
        break
    vm = px.nodes(NODE).qemu(vmid)
    vm.config.put(cores=1, sockets=1, memory=128, net0='virtio,bridge=vmbr0', tags='bench')
    res = vm.resize.put(disk='scsi0', size='4G')
    if isinstance(res, str) and res.startswith('UPID:'):
        wait(px, res)
    wait(px, vm.status.start.post())
    return vmid


def main():
    conf = json.loads(sys.argv[1])
    n, threads, prefix = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    px = api(conf)
    started = time.monotonic()
    names = ['{0}-{1}'.format(prefix, i) for i in range(n)]
    if threads <= 1:
        vmids = [create(px, name) for name in names]
    else:
        with ThreadPoolExecutor(threads) as pool:
            vmids = list(pool.map(lambda name: create(api(conf), name), names))
    print(json.dumps({'seconds': time.monotonic() - started, 'vmids': vmids}))


if __name__ == '__main__':
    main()
