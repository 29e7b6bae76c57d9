"""pyvmomi, the independent vSphere client of HCP's tests.

Usage: pyvmomi_client.py '{"host": "127.0.0.1", "port": 18700, "user": "u", "password": "p",
                            "args": {"cmd": "...", ...}}'
Prints one JSON document. Commands:
  thumbprint                      SHA-256 of the server's certificate (hex)
  setup {template, source}        clones `source` into a template named `template` (idempotent)
  show {name}                     a VM's state as vCenter reports it
  clone {name, source}            a plain clone of `source`, made outside HCP (no mark)
  snapshots {name}                a VM's snapshot tree (names, children in vCenter's order) and
                                  the current snapshot's name
  snapshot {name, snapshot, memory}
                                  takes a snapshot outside HCP
  terminate_others                ends every session but this one (HCP's included)
  destroy {name}                  powers a VM off and destroys it
  inventory {repeat}              the property-collector read HCP's inventory makes, timed
  creates {n, threads, source, pool_host, prefix}
                                  n clones + power-on on `threads` threads, timed (benchmark)
"""

import base64
import concurrent.futures
import hashlib
import json
import ssl
import sys
import time

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl


def connect(c):
    return SmartConnect(
        host=c["host"],
        port=c["port"],
        user=c["user"],
        pwd=c["password"],
        disableSslCertValidation=True,
    )


def find(si, kind, name):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        for obj in view.view:
            try:
                if obj.name == name:
                    return obj
            except vmodl.fault.ManagedObjectNotFound:
                # The simulator's views keep destroyed objects.
                continue
    finally:
        view.Destroy()
    return None


def wait(task):
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    if task.info.state == "error":
        raise RuntimeError(task.info.error.msg)
    return task.info.result


def setup(si, a):
    if find(si, vim.VirtualMachine, a["template"]) is not None:
        return {"created": False}
    src = find(si, vim.VirtualMachine, a["source"])
    spec = vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(pool=src.resourcePool), template=True, powerOn=False
    )
    wait(src.CloneVM_Task(folder=src.parent, name=a["template"], spec=spec))
    return {"created": True}


def show(si, a):
    vm = find(si, vim.VirtualMachine, a["name"])
    if vm is None:
        return {"found": False}
    nics = []
    for d in vm.config.hardware.device:
        if isinstance(d, vim.vm.device.VirtualEthernetCard):
            b = d.backing
            if isinstance(b, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
                nics.append(b.deviceName)
            elif isinstance(
                b, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
            ):
                nics.append("dvpg:" + b.port.portgroupKey)
    disks = [
        d.capacityInKB // (1024 * 1024)
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk)
    ]
    snaps = []
    if has_snapshots(vm):
        stack = list(vm.snapshot.rootSnapshotList)
        while stack:
            s = stack.pop()
            snaps.append(s.name)
            stack.extend(s.childSnapshotList)
    extra = {o.key: o.value for o in vm.config.extraConfig}
    return {
        "found": True,
        "moref": vm._moId,
        "power": str(vm.runtime.powerState),
        "host": vm.runtime.host.name,
        "cpus": vm.config.hardware.numCPU,
        "memory_mb": vm.config.hardware.memoryMB,
        "nics": nics,
        "disks_gib": disks,
        "snapshots": sorted(snaps),
        "mark": extra.get("hcp.mark"),
        "userdata": decode(extra, "guestinfo.userdata"),
        "metadata": decode(extra, "guestinfo.metadata"),
    }


def has_snapshots(vm):
    # The simulator drops the connection when `snapshot` is read on a VM without one; its
    # snapshot files say whether there are any.
    return vm.layoutEx is not None and len(vm.layoutEx.snapshot) > 0


def snapshots(si, a):
    vm = find(si, vim.VirtualMachine, a["name"])
    if vm is None:
        return {"found": False}
    if not has_snapshots(vm):
        return {"found": True, "tree": [], "current": None}
    info = vm.snapshot
    names = {}

    def walk(trees):
        out = []
        for t in trees:
            names[t.snapshot._moId] = t.name
            out.append({"name": t.name, "children": walk(t.childSnapshotList)})
        return out

    tree = walk(info.rootSnapshotList)
    current = names.get(info.currentSnapshot._moId) if info.currentSnapshot else None
    return {"found": True, "tree": tree, "current": current}


def snapshot(si, a):
    vm = find(si, vim.VirtualMachine, a["name"])
    task = vm.CreateSnapshot_Task(
        name=a["snapshot"], description="taken by pyvmomi", memory=a["memory"], quiesce=False
    )
    return {"moref": wait(task)._moId}


def decode(extra, key):
    value = extra.get(key)
    if value is None:
        return None
    if extra.get(key + ".encoding") == "base64":
        return base64.b64decode(value).decode()
    return value


def clone(si, a):
    src = find(si, vim.VirtualMachine, a["source"])
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=src.resourcePool), powerOn=False)
    vm = wait(src.CloneVM_Task(folder=src.parent, name=a["name"], spec=spec))
    return {"moref": vm._moId}


def destroy(si, a):
    vm = find(si, vim.VirtualMachine, a["name"])
    if vm is None:
        return {"destroyed": False}
    if vm.runtime.powerState != "poweredOff":
        wait(vm.PowerOffVM_Task())
    wait(vm.Destroy_Task())
    return {"destroyed": True}


def terminate_others(si):
    sm = si.content.sessionManager
    mine = sm.currentSession.key
    others = [s.key for s in sm.sessionList if s.key != mine]
    if others:
        sm.TerminateSession(sessionId=others)
    return {"terminated": len(others)}


def inventory(si, repeat=1):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    pc = content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            vmodl.query.PropertyCollector.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    vmodl.query.PropertyCollector.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView
                    )
                ],
            )
        ],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.VirtualMachine,
                pathSet=[
                    "name",
                    "runtime.powerState",
                    "runtime.host",
                    "config.template",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.extraConfig",
                ],
            )
        ],
    )
    times = []
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        objects = list(result.objects)
        while result.token:
            result = pc.ContinueRetrievePropertiesEx(result.token)
            objects.extend(result.objects)
        times.append(time.perf_counter() - started)
    view.Destroy()
    times.sort()
    return {"count": len(objects), "seconds": times[len(times) // 2], "all": times}


def wait_pc(si, task):
    """Follows a task with WaitForUpdatesEx, as pyVim.task.WaitForTask does."""
    from pyVim.task import WaitForTask

    WaitForTask(task, si=si)
    return task.info.result


def creates(si, a):
    src = find(si, vim.VirtualMachine, a["source"])
    host = find(si, vim.HostSystem, a["pool_host"])
    pool = host.parent.resourcePool

    def one(i):
        spec = vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(pool=pool, host=host), powerOn=False
        )
        vm = wait_pc(si, src.CloneVM_Task(folder=src.parent, name=f"{a['prefix']}-{i}", spec=spec))
        wait_pc(si, vm.PowerOnVM_Task())
        return vm._moId

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a["threads"]) as pool_:
        ids = list(pool_.map(one, range(a["n"])))
    return {"seconds": time.perf_counter() - started, "ids": ids}


def main():
    c = json.loads(sys.argv[1])
    a = c["args"]
    if a["cmd"] == "thumbprint":
        pem = ssl.get_server_certificate((c["host"], c["port"]))
        der = ssl.PEM_cert_to_DER_cert(pem)
        print(json.dumps({"sha256": hashlib.sha256(der).hexdigest(), "pem": pem}))
        return
    si = connect(c)
    try:
        out = {
            "setup": lambda: setup(si, a),
            "show": lambda: show(si, a),
            "clone": lambda: clone(si, a),
            "snapshots": lambda: snapshots(si, a),
            "snapshot": lambda: snapshot(si, a),
            "terminate_others": lambda: terminate_others(si),
            "destroy": lambda: destroy(si, a),
            "inventory": lambda: inventory(si, a.get("repeat", 1)),
            "creates": lambda: creates(si, a),
        }[a["cmd"]]()
    finally:
        Disconnect(si)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
