"""An in-memory Hyper-V host: VMs, VHDX files, switches, VLANs, notes, KVP items, checkpoints,
DVD ISOs and failover-cluster owner nodes, with the cmdlets' behaviour and error wording
(Get-VM, New-VM, New-VHD, Copy-Item, Set-VMProcessor, Set-VMMemory, Connect-VMNetworkAdapter,
Set-VMNetworkAdapterVlan, Start-VM, Stop-VM, Restart-VM, Remove-VM, Checkpoint-VM, Get-VMSnapshot,
Restore-VMSnapshot, Remove-VMSnapshot, Resize-VHD, Get-VMHost, Get-ClusterGroup).

Checkpoints behave as Hyper-V's: a VM's CheckpointType is Production by default (a disk-only
checkpoint through the guest's VSS or file system freeze, captured State Off); a Production
checkpoint of a running VM whose guest does not answer falls back to a Standard one
(ProductionOnly fails instead); a Standard checkpoint captures the VM's state, so one of a
running VM holds its memory. Applying a checkpoint that holds memory leaves the VM Saved (its
memory becomes the VM's saved state); applying a disk-only one leaves it Off. Hyper-V lets
several checkpoints of one VM share a name; HCP's scripts refuse to guess between them.

Each public method named after a script (`new_hcp_vm` for `New-HcpVm.ps1`) carries out that
script's semantics; see scripts.py for the mapping."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

GIB = 1024**3
MIB = 1024**2


class PsError(Exception):
    """A terminating PowerShell error: category, message, the cmdlet and FullyQualifiedErrorId."""

    def __init__(self, category: str, message: str, cmdlet: str, fqid: str = ""):
        super().__init__(message)
        self.category = category
        self.message = message
        self.cmdlet = cmdlet
        self.fqid = fqid or f"{category},Microsoft.HyperV.PowerShell.Commands.{cmdlet.replace('-', '')}Command"

    def record(self) -> dict[str, str]:
        return {"Category": self.category, "Message": self.message, "Cmdlet": self.cmdlet, "FullyQualifiedErrorId": self.fqid}


@dataclass
class Vm:
    id: str
    name: str
    generation: int
    state: str = "Off"
    processor_count: int = 1
    memory_startup: int = 512 * MIB
    dynamic_memory: bool = False
    memory_minimum: int = 512 * MIB
    memory_maximum: int = 1024 * GIB
    notes: str = ""
    hard_drives: list[str] = field(default_factory=list)
    dvd: list[str] = field(default_factory=list)
    adapters: list[dict[str, Any]] = field(default_factory=list)
    kvp: dict[str, str] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_type: str = "Production"  # Set-VM -CheckpointType: Standard, Production, ProductionOnly, Disabled
    owner: str = ""
    guest: str = "cooperative"  # or "unresponsive": ignores shutdown requests
    guest_kvp: dict[str, str] = field(default_factory=dict)  # guest-to-host KVP items

    def view(self) -> dict[str, Any]:
        d = copy.deepcopy(self.__dict__)
        return d


class ClusterStore:
    """VMs of one host, or of all nodes of one failover cluster (each VM with an owner node)."""

    def __init__(self, name: str | None):
        self.name = name
        self.vms: dict[str, Vm] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()


def norm(path: str) -> str:
    return path.replace("/", "\\").rstrip("\\").lower()


class HyperVHost:
    """One Hyper-V host (a cluster node when its store is shared)."""

    def __init__(
        self,
        name: str,
        store: ClusterStore | None = None,
        logical_processors: int = 32,
        memory_mib: int = 131072,
        switches: tuple[str, ...] = ("LAN", "Default Switch"),
        templates: dict[str, int] | None = None,
        template_dir: str = "C:\\HCP\\Templates",
        copy_seconds: float = 0.6,
    ):
        self.name = name
        self.store = store or ClusterStore(None)
        self.logical_processors = logical_processors
        self.memory = memory_mib * MIB
        self.switches = list(switches)
        self.copy_seconds = copy_seconds
        # The host's own file system (scripts, markers); VHDX files live in the shared store so
        # that a cluster's CSV volume is visible from every node.
        self.fs: dict[str, bytes] = {}
        self.fs_lock = threading.RLock()
        for image, size_gib in (templates or {"ubuntu-24.04": 5, "windows-2022": 32}).items():
            self.store.files[norm(f"{template_dir}\\{image}.vhdx")] = {
                "Path": f"{template_dir}\\{image}.vhdx", "Size": size_gib * GIB, "Parent": None, "Kind": "template"}

    # -- helpers ----------------------------------------------------------------------------------
    def local_vms(self) -> list[Vm]:
        return [v for v in self.store.vms.values() if v.owner == self.name]

    def get_vm_by_id(self, vm_id: str, cluster: bool) -> Vm | None:
        vm = self.store.vms.get(vm_id.lower())
        if vm is None:
            return None
        if vm.owner != self.name and not cluster:
            return None
        return vm

    @staticmethod
    def mark_of(vm: Vm) -> dict[str, Any] | None:
        try:
            doc = json.loads(vm.notes)
        except (ValueError, TypeError):
            return None
        return doc.get("hcp") if isinstance(doc, dict) else None

    def find_target(self, p: dict[str, Any]) -> Vm | None:
        """The scripts' Find-HcpVm (HcpCommon.psm1): by Hyper-V id, else by HCP's mark in Notes;
        on a cluster, across the VM roles of every node (Get-ClusterGroup)."""
        cluster = bool(p.get("Cluster"))
        native = p.get("NativeId")
        if native:
            vm = self.get_vm_by_id(native, cluster)
            if vm is not None:
                return vm
        candidates = list(self.store.vms.values()) if cluster else self.local_vms()
        for vm in candidates:
            mark = self.mark_of(vm)
            if mark and mark.get("vm_id") == p.get("VmId"):
                return vm
        return None

    def used_memory(self) -> int:
        return sum(v.memory_startup for v in self.local_vms() if v.state == "Running")

    def check_start_memory(self, vm: Vm) -> None:
        if self.used_memory() + vm.memory_startup > self.memory:
            raise PsError(
                "LimitsExceeded",
                f"'{vm.name}' failed to start. Not enough memory in the system to start the virtual machine {vm.name}.",
                "Start-VM",
            )

    def vm_view(self, vm: Vm) -> dict[str, Any]:
        size = 0
        for path in vm.hard_drives:
            f = self.store.files.get(norm(path))
            if f:
                size += f["Size"]
        return {
            "Id": vm.id,
            "Name": vm.name,
            "State": vm.state,
            "ProcessorCount": vm.processor_count,
            "MemoryStartupMiB": vm.memory_startup // MIB,
            "DynamicMemoryEnabled": vm.dynamic_memory,
            "Generation": vm.generation,
            "Notes": vm.notes,
            "OwnerNode": vm.owner,
            "DiskGiB": size // GIB,
            "Switches": [a["SwitchName"] for a in vm.adapters],
        }

    # -- scripts ----------------------------------------------------------------------------------
    def get_hcp_inventory(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            tdir = norm(p["TemplateDir"])
            images = sorted(
                f["Path"].split("\\")[-1][: -len(".vhdx")]
                for k, f in self.store.files.items()
                if k.startswith(tdir + "\\") and k.endswith(".vhdx") and "\\" not in k[len(tdir) + 1:]
            )
            return {
                "Host": {
                    "Name": self.name,
                    "LogicalProcessorCount": self.logical_processors,
                    "MemoryCapacityMiB": self.memory // MIB,
                    "Cluster": self.store.name,
                },
                "Vms": [self.vm_view(v) for v in sorted(self.local_vms(), key=lambda v: v.name)],
                "Images": images,
                "Switches": list(self.switches),
            }

    def new_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            existing = self.find_target({"VmId": p["VmId"], "Cluster": p.get("Cluster")})
            if existing is not None:
                return {"Id": existing.id, "State": existing.state, "Existing": True, "OwnerNode": existing.owner}
            if any(v.name.lower() == p["Name"].lower() for v in self.local_vms()):
                raise PsError("ResourceExists", f"A virtual machine named '{p['Name']}' already exists on host '{self.name}'.", "New-HcpVm", "VmNameInUse,New-HcpVm.ps1")
            networks = p.get("Networks") or []
            if len(networks) > 8:
                raise PsError("InvalidArgument", f"A VM has at most 8 network adapters; {len(networks)} were requested.", "New-HcpVm", "TooManyAdapters,New-HcpVm.ps1")
            for n in networks:
                if not isinstance(n, dict) or not isinstance(n.get("SwitchName"), str):
                    raise PsError("InvalidArgument", "Cannot process argument transformation on parameter 'Networks'. Cannot convert value to type hashtable[].", "New-HcpVm", "ParameterArgumentTransformationError,New-HcpVm.ps1")
                if not 0 <= int(n.get("VlanId") or 0) <= 4094:
                    raise PsError("InvalidArgument", f"VLAN {n.get('VlanId')} is outside 0-4094.", "New-HcpVm", "InvalidVlan,New-HcpVm.ps1")
                if n["SwitchName"] not in self.switches:
                    raise PsError("ObjectNotFound", f'Hyper-V was unable to find a virtual switch with name "{n["SwitchName"]}".', "Get-VMSwitch", "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVMSwitch")
            template = self.store.files.get(norm(p["TemplatePath"]))
            if template is None:
                raise PsError("ObjectNotFound", f"Template VHDX '{p['TemplatePath']}' for image '{p['Image']}' was not found on host '{self.name}'.", "New-HcpVm", "TemplateNotFound,New-HcpVm.ps1")
            memory = int(p["MemoryMiB"]) * MIB
            if p["Start"] and self.used_memory() + memory > self.memory:
                raise PsError("LimitsExceeded", f"Not enough memory on host '{self.name}': {memory // MIB} MiB requested, {(self.memory - self.used_memory()) // MIB} MiB free.", "New-HcpVm", "InsufficientMemory,New-HcpVm.ps1")
            if int(p["Vcpus"]) > self.logical_processors:
                raise PsError("InvalidArgument", f"The processor count {p['Vcpus']} exceeds the {self.logical_processors} logical processors of host '{self.name}'.", "Set-VMProcessor", "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.SetVMProcessor")
            vm_id = str(uuid.uuid4())
            disk_path = f"{p['VhdDir']}\\{p['Name']}-{p['VmId']}.vhdx"
        progress(10, f"creating disk {disk_path.split(chr(92))[-1]} ({p['DiskMode']})")
        size = max(template["Size"], int(p["DiskGiB"]) * GIB)
        if p["DiskMode"] == "copy":
            steps = 5
            for i in range(1, steps + 1):
                time.sleep(self.copy_seconds / steps)
                progress(10 + i * 12, f"copying template VHDX: {i * 100 // steps}%")
        with self.store.lock:
            self.store.files[norm(disk_path)] = {
                "Path": disk_path, "Size": size,
                "Parent": p["TemplatePath"] if p["DiskMode"] == "differencing" else None, "Kind": "vhdx"}
            vm = Vm(id=vm_id, name=p["Name"], generation=int(p["Generation"]), owner=self.name)
            vm.processor_count = int(p["Vcpus"])
            vm.memory_startup = memory
            if p.get("DynamicMemory"):
                vm.dynamic_memory = True
                vm.memory_minimum = int(p["MemoryMinimumMiB"]) * MIB
                vm.memory_maximum = int(p["MemoryMaximumMiB"]) * MIB
            vm.hard_drives.append(disk_path)
            for i, n in enumerate(networks):
                name = "Network Adapter" if i == 0 else f"Network Adapter {i + 1}"
                vm.adapters.append({"Name": name, "SwitchName": n["SwitchName"], "VlanId": int(n.get("VlanId") or 0)})
            vm.notes = p["Notes"]
            for k, v in (p.get("Kvp") or {}).items():
                vm.kvp[k] = v
            if p.get("UserData") is not None:
                iso = f"{p['VhdDir']}\\{p['Name']}-{p['VmId']}-cidata.iso"
                self.store.files[norm(iso)] = {"Path": iso, "Size": 1 * MIB, "Parent": None, "Kind": "iso",
                                               "Label": "cidata", "Files": {"user-data": p["UserData"], "meta-data": f"instance-id: {p['VmId']}\nlocal-hostname: {p['Name']}\n"}}
                vm.dvd.append(iso)
            if p.get("Unattend") is not None:
                iso = f"{p['VhdDir']}\\{p['Name']}-{p['VmId']}-unattend.iso"
                self.store.files[norm(iso)] = {"Path": iso, "Size": 1 * MIB, "Parent": None, "Kind": "iso",
                                               "Label": "UNATTEND", "Files": {"autounattend.xml": p["Unattend"]}}
                vm.dvd.append(iso)
            for iso in p.get("IsoPaths") or []:
                if norm(iso) not in self.store.files and norm(iso) not in self.fs:
                    raise PsError("ObjectNotFound", f"Cannot find path '{iso}' because it does not exist.", "Add-VMDvdDrive", "PathNotFound,Microsoft.HyperV.PowerShell.Commands.AddVMDvdDrive")
                vm.dvd.append(iso)
            self.store.vms[vm_id] = vm
            progress(80, f"virtual machine {vm_id} created")
            if p["Start"]:
                self.check_start_memory(vm)
                vm.state = "Running"
            return {"Id": vm.id, "State": vm.state, "Existing": False, "OwnerNode": vm.owner}

    def remove_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self.find_target(p)
            if vm is None:
                return {"Existed": False}
            if vm.state != "Off":
                if not p.get("Force"):
                    raise PsError("InvalidOperation", f"The virtual machine '{vm.name}' is running. Stop it first or remove it with Force.", "Remove-HcpVm", "VmRunning,Remove-HcpVm.ps1")
                vm.state = "Off"
            for path in vm.hard_drives + [c["Path"] for c in vm.checkpoints] + [d for d in vm.dvd if d.lower().endswith(("-cidata.iso", "-unattend.iso"))]:
                self.store.files.pop(norm(path), None)
            del self.store.vms[vm.id]
            return {"Existed": True}

    def _must(self, p: dict[str, Any], cmdlet: str) -> Vm:
        vm = self.find_target(p)
        if vm is None:
            what = p.get("NativeId") or p.get("VmId")
            raise PsError("ObjectNotFound", f'Hyper-V was unable to find a virtual machine with id "{what}".', cmdlet, f"InvalidParameter,Microsoft.HyperV.PowerShell.Commands.{cmdlet.replace('-', '')}")
        return vm

    def complete_hcp_guest_setup(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Complete-HcpGuestSetup.ps1: the guest's KVP item, and the answer-file ISO detached and
        deleted once it is there (or when asked to finish)."""
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            value = vm.guest_kvp.get(p["Key"])
            removed = 0
            if value is not None or p.get("Finish"):
                for iso in [d for d in vm.dvd if d.endswith("-unattend.iso")]:
                    vm.dvd.remove(iso)
                    self.store.files.pop(norm(iso), None)
                    removed += 1
            return {"Done": value is not None, "Value": value, "MediaRemoved": removed}

    def set_guest_kvp(self, vm_id: str, key: str, value: str) -> None:
        """What a guest's `reg add HKLM\\SOFTWARE\\Microsoft\\Virtual Machine\\Auto` does."""
        with self.store.lock:
            self.store.vms[vm_id.lower()].guest_kvp[key] = value

    def start_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            if vm.state == "Running":
                return {"WasRunning": True}
            self.check_start_memory(vm)
            vm.state = "Running"
            return {"WasRunning": False}

    def stop_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            if vm.state == "Off":
                return {"WasStopped": True, "Forced": False}
            if p.get("Force"):
                vm.state = "Off"
                return {"WasStopped": False, "Forced": True}
            cooperative = vm.guest == "cooperative"
            if cooperative:
                vm.state = "Off"
                return {"WasStopped": False, "Forced": False}
        progress(50, "guest did not answer the shutdown request; waiting")
        time.sleep(min(float(p.get("GracefulTimeoutSec", 60)), 30.0))
        with self.store.lock:
            vm.state = "Off"
        return {"WasStopped": False, "Forced": True}

    def restart_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            if vm.state != "Running":
                raise PsError("InvalidOperation", "The operation cannot be performed while the object is in its current state.", "Restart-VM", "InvalidOperation,Microsoft.HyperV.PowerShell.Commands.RestartVM")
            return {"Restarted": True}

    def resize_hcp_vm(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Resize-HcpVm.ps1: every check before any change. Set-VMProcessor -Count and
        Set-VMMemory -StartupBytes only while the VM is Off; Resize-VHD of the first drive's VHDX
        (New-VM -VHDPath put it on IDE 0:0 for generation 1, SCSI 0:0 for generation 2): live on
        the SCSI chain, Off only on the IDE chain (as Resize-VHD's documentation says), never
        smaller, never while checkpoints make the drive a differencing chain."""
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            off = vm.state == "Off"
            changed: list[str] = []
            vcpus = int(p.get("Vcpus") or 0)
            set_cpu = vcpus > 0 and vcpus != vm.processor_count
            if set_cpu:
                top = 64 if vm.generation == 1 else 240
                if vcpus > top:
                    raise PsError("InvalidArgument", f"Generation {vm.generation} virtual machines have 1-{top} virtual processors; {vcpus} were asked for.", "Resize-HcpVm", "ProcessorCountOutOfRange,Resize-HcpVm.ps1")
                if not off:
                    raise PsError("InvalidOperation", f"Virtual machine '{vm.name}' is {vm.state}; Hyper-V changes its processor count only while it is off.", "Resize-HcpVm", "ProcessorCountNeedsOff,Resize-HcpVm.ps1")
                if vcpus > self.logical_processors:
                    # Set-VMProcessor's own refusal, checked before any change here for simplicity.
                    raise PsError("InvalidArgument", f"The processor count {vcpus} exceeds the {self.logical_processors} logical processors of host '{self.name}'.", "Set-VMProcessor", "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.SetVMProcessor")
            memory_mib = int(p.get("MemoryMiB") or 0)
            new_bytes = memory_mib * MIB
            set_memory = memory_mib > 0 and new_bytes != vm.memory_startup
            if set_memory:
                if memory_mib % 2:
                    raise PsError("InvalidArgument", f"Startup memory must be a multiple of 2 MB; {memory_mib} MB was asked for.", "Resize-HcpVm", "MemoryNotAligned,Resize-HcpVm.ps1")
                top = 1048576 if vm.generation == 1 else 12582912
                if not 32 <= memory_mib <= top:
                    raise PsError("InvalidArgument", f"Generation {vm.generation} virtual machines have 32-{top} MB of memory; {memory_mib} MB was asked for.", "Resize-HcpVm", "MemoryOutOfRange,Resize-HcpVm.ps1")
                if not off:
                    raise PsError("InvalidOperation", f"Virtual machine '{vm.name}' is {vm.state}; HCP changes its memory only while it is off.", "Resize-HcpVm", "MemoryNeedsOff,Resize-HcpVm.ps1")
            disk_gib = int(p.get("DiskGiB") or 0)
            disk = None
            set_disk = False
            if disk_gib > 0:
                disk = self.store.files.get(norm(vm.hard_drives[0])) if vm.hard_drives else None
                if disk is None:
                    raise PsError("InvalidArgument", f"Virtual machine '{vm.name}' has no virtual hard disk to grow.", "Resize-HcpVm", "DiskNotFound,Resize-HcpVm.ps1")
                size = disk_gib * GIB
                if size < disk["Size"]:
                    raise PsError("InvalidArgument", f"The virtual hard disk of '{vm.name}' is {disk['Size'] // GIB} GB; HCP never shrinks a disk ({disk_gib} GB was asked for).", "Resize-HcpVm", "DiskShrink,Resize-HcpVm.ps1")
                set_disk = size != disk["Size"]
                if set_disk and vm.checkpoints:
                    raise PsError("InvalidOperation", f"Virtual machine '{vm.name}' has checkpoints; its virtual hard disk cannot be resized until they are removed.", "Resize-HcpVm", "DiskHasCheckpoints,Resize-HcpVm.ps1")
                if set_disk and vm.generation == 1 and not off:
                    raise PsError("InvalidOperation", f"The virtual hard disk of '{vm.name}' is on the IDE chain; Hyper-V resizes it only while the virtual machine is off.", "Resize-HcpVm", "DiskOnIdeNeedsOff,Resize-HcpVm.ps1")
            if set_cpu:
                vm.processor_count = vcpus
                changed.append("Vcpus")
            if set_memory:
                if vm.dynamic_memory:
                    vm.memory_minimum = min(vm.memory_minimum, new_bytes)
                    vm.memory_maximum = max(vm.memory_maximum, new_bytes)
                vm.memory_startup = new_bytes
                changed.append("MemoryMiB")
            if set_disk and disk is not None:
                progress(50, f"growing the virtual hard disk to {disk_gib} GB")
                disk["Size"] = disk_gib * GIB
                changed.append("DiskGiB")
            return {"Changed": changed, "State": vm.state, "Vm": self.vm_view(vm)}

    def get_hcp_console(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            if vm.state != "Running":
                raise PsError("InvalidOperation", f"The virtual machine '{vm.name}' is not running; a console needs a running virtual machine.", "Get-HcpConsole", "VmNotRunning,Get-HcpConsole.ps1")
            return {"HostName": vm.owner or self.name, "Port": 2179, "VmId": vm.id}

    @staticmethod
    def checkpoint_by_name(vm: Vm, name: str) -> dict[str, Any] | None:
        """HcpCommon.psm1's Get-HcpCheckpointByName: the one Standard checkpoint named `name`
        (PowerShell's -eq: case-insensitive), None, or an error when several share the name."""
        found = [c for c in vm.checkpoints if c["SnapshotType"] == "Standard" and c["Name"].lower() == name.lower()]
        if len(found) > 1:
            raise PsError("InvalidOperation", f"{len(found)} checkpoints of virtual machine '{vm.name}' are named '{name}'; HCP needs checkpoint names to be unique per VM. Rename or remove the others in Hyper-V first.", "Get-HcpCheckpointByName", "CheckpointNameNotUnique")
        return found[0] if found else None

    @staticmethod
    def checkpoint_view(c: dict[str, Any]) -> dict[str, Any]:
        """HcpCommon.psm1's Get-HcpCheckpointView."""
        return {"Id": c["Id"], "Name": c["Name"], "CreationTime": c["CreationTime"], "State": c["State"], "Memory": c["State"] != "Off"}

    def checkpoint_vm(self, vm: Vm, name: str, snapshot_type: str = "Standard") -> dict[str, Any]:
        """Checkpoint-VM (or, with another `snapshot_type`, what backup software or Replica
        makes): the captured state follows the VM's CheckpointType."""
        kind = vm.checkpoint_type
        if kind == "Disabled":
            raise PsError("InvalidOperation", f"Checkpoint operation failed. Checkpoints are disabled for '{vm.name}'.", "Checkpoint-VM", "InvalidOperation,Microsoft.HyperV.PowerShell.Commands.CheckpointVM")
        captured = vm.state
        if kind in ("Production", "ProductionOnly"):
            if vm.state == "Running" and vm.guest != "cooperative":
                if kind == "ProductionOnly":
                    raise PsError("NotSpecified", f"Checkpoint operation failed. '{vm.name}' could not initiate a checkpoint operation: the guest did not take a production checkpoint.", "Checkpoint-VM", "OperationFailed,Microsoft.HyperV.PowerShell.Commands.CheckpointVM")
                # Production falls back to a Standard checkpoint when the guest cannot take one.
            else:
                captured = "Off"
        now = time.time()
        last = max((c["_t"] for c in vm.checkpoints), default=0.0)
        now = max(now, last + 1e-6)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e7):07d}Z"
        cid = str(uuid.uuid4())
        path = f"{vm.hard_drives[0][:-5]}_{cid}.avhdx" if vm.hard_drives else ""
        c = {"Id": cid, "Name": name, "Path": path, "CreationTime": created, "_t": now,
             "State": captured, "SnapshotType": snapshot_type}
        vm.checkpoints.append(c)
        if path:
            self.store.files[norm(path)] = {"Path": path, "Size": 4 * MIB, "Parent": vm.hard_drives[0], "Kind": "avhdx"}
        return c

    def new_hcp_checkpoint(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            if self.checkpoint_by_name(vm, p["CheckpointName"]) is not None:
                raise PsError("ResourceExists", f"A checkpoint named '{p['CheckpointName']}' already exists for virtual machine '{vm.name}'.", "New-HcpCheckpoint", "CheckpointExists,New-HcpCheckpoint.ps1")
            c = self.checkpoint_vm(vm, p["CheckpointName"])
            return {"Id": c["Id"]}

    def get_hcp_checkpoint(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Get-HcpCheckpoint.ps1: Get-VMSnapshot -SnapshotType Standard, by CreationTime."""
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            listed = sorted((c for c in vm.checkpoints if c["SnapshotType"] == "Standard"), key=lambda c: (c["_t"], c["Id"]))
            return {"Checkpoints": [self.checkpoint_view(c) for c in listed]}

    def restore_hcp_checkpoint(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Restore-HcpCheckpoint.ps1: Restore-VMSnapshot, then Start-VM when the checkpoint's
        memory left the VM Saved."""
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            c = self.checkpoint_by_name(vm, p["CheckpointName"])
            if c is None:
                raise PsError("ObjectNotFound", f"Virtual machine '{vm.name}' has no checkpoint named '{p['CheckpointName']}'.", "Restore-HcpCheckpoint", "CheckpointNotFound,Restore-HcpCheckpoint.ps1")
            memory = c["State"] != "Off"
            # Restore-VMSnapshot: the current state is discarded; the checkpoint's memory (if
            # any) becomes the VM's saved state.
            vm.state = "Saved" if memory else "Off"
            if memory:
                self.check_start_memory(vm)
                vm.state = "Running"
            return {"MemoryKept": memory, "State": vm.state}

    def remove_hcp_checkpoint(self, p: dict[str, Any], progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Remove-HcpCheckpoint.ps1: Remove-VMSnapshot; its differencing disk is merged away."""
        with self.store.lock:
            vm = self._must(p, "Get-VM")
            c = self.checkpoint_by_name(vm, p["CheckpointName"])
            if c is None:
                return {"Existed": False}
            vm.checkpoints.remove(c)
            if c["Path"]:
                self.store.files.pop(norm(c["Path"]), None)
            return {"Existed": True}

    # -- control (tests) --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.store.lock, self.fs_lock:
            return {
                "vms": {k: v.view() for k, v in self.store.vms.items() if v.owner == self.name or self.store.name},
                "files": sorted(f["Path"] for f in self.store.files.values()),
                "media": {f["Path"]: f["Files"] for f in self.store.files.values() if f.get("Kind") == "iso" and "Files" in f},
                "fs": {k: v.decode("utf-8", "replace") for k, v in self.fs.items()},
            }

    def move_vm_owner(self, vm_id: str, node: str) -> None:
        with self.store.lock:
            self.store.vms[vm_id.lower()].owner = node

    def set_state(self, vm_id: str, state: str) -> None:
        with self.store.lock:
            self.store.vms[vm_id.lower()].state = state

    def seed_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self.store.lock:
            vm = Vm(id=str(uuid.uuid4()), name=spec["name"], generation=2, owner=self.name,
                    state=spec.get("state", "Off"), notes=spec.get("notes", ""), guest=spec.get("guest", "cooperative"))
            vm.memory_startup = int(spec.get("memory_mib", 512)) * MIB
            self.store.vms[vm.id] = vm
            return {"Id": vm.id}

    def set_checkpoint_type(self, vm_id: str, kind: str) -> None:
        """Set-VM -CheckpointType."""
        if kind not in ("Standard", "Production", "ProductionOnly", "Disabled"):
            raise KeyError(f"CheckpointType {kind!r}")
        with self.store.lock:
            self.store.vms[vm_id.lower()].checkpoint_type = kind

    def seed_checkpoint(self, vm_id: str, name: str, snapshot_type: str = "Standard") -> dict[str, Any]:
        """A checkpoint taken outside HCP (Hyper-V Manager, backup software: `snapshot_type`
        Recovery), which may repeat a name."""
        with self.store.lock:
            c = self.checkpoint_vm(self.store.vms[vm_id.lower()], name, snapshot_type)
            return self.checkpoint_view(c)

    def set_guest(self, vm_id: str, guest: str) -> None:
        with self.store.lock:
            self.store.vms[vm_id.lower()].guest = guest
