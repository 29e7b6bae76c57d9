"""Type stubs of the native module ``hcp._hcp``.

Users import these classes from :mod:`hcp`; ``Core`` is private to the package.
"""

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Optional, final

__version__: str

@final
class ErrorInfo:
    """An error as HCP reports it on a failed job or VM."""

    @property
    def kind(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def field(self) -> Optional[str]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Vm:
    """A VM as its project sees it: never its host or the hypervisor's id for it."""

    @property
    def id(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def flavor(self) -> Optional[str]: ...
    @property
    def vcpus(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...
    @property
    def disk_gib(self) -> int: ...
    @property
    def zone(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def power(self) -> str: ...
    @property
    def desired_power(self) -> str: ...
    @property
    def networks(self) -> list[str]: ...
    @property
    def tags(self) -> dict[str, str]: ...
    @property
    def has_user_data(self) -> bool: ...
    @property
    def last_error(self) -> Optional[ErrorInfo]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Job:
    """An infrastructure change on one VM, run in the background."""

    @property
    def id(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def vm_id(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def progress(self) -> int: ...
    @property
    def pending_reason(self) -> Optional[str]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def principal(self) -> str: ...
    @property
    def error(self) -> Optional[ErrorInfo]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> Optional[datetime]: ...
    @property
    def finished_at(self) -> Optional[datetime]: ...
    @property
    def done(self) -> bool: ...
    @property
    def succeeded(self) -> bool: ...
    def raise_for_state(self) -> Job: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class JobLogLine:
    """One line of a job's log."""

    @property
    def job_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Submitted:
    """The answer to an accepted change: the VM and the job that acts on it."""

    @property
    def vm_id(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def replayed(self) -> bool: ...
    @property
    def job(self) -> Optional[Job]: ...
    @property
    def snapshot_id(self) -> Optional[str]: ...
    @property
    def memory_state_kept(self) -> Optional[bool]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class FieldPlan:
    """What applying one field of a resize takes (an item of ``plan_resize``)."""

    @property
    def field(self) -> str: ...
    @property
    def from_value(self) -> int: ...
    @property
    def to_value(self) -> int: ...
    @property
    def impact(self) -> str: ...
    @property
    def reason(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Snapshot:
    """One snapshot of a VM, with HCP's id (never the hypervisor's)."""

    @property
    def id(self) -> str: ...
    @property
    def vm_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def created_at(self) -> Optional[datetime]: ...
    @property
    def memory(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Capabilities:
    """What a host, zone or provider can do: capability flags and optional limits."""

    @property
    def cloud_init(self) -> bool: ...
    @property
    def snapshot(self) -> bool: ...
    @property
    def live_migration(self) -> bool: ...
    @property
    def console_vnc(self) -> bool: ...
    @property
    def console_spice(self) -> bool: ...
    @property
    def console_rdp(self) -> bool: ...
    @property
    def console_webmks(self) -> bool: ...
    @property
    def console_web(self) -> bool: ...
    @property
    def gpu_passthrough(self) -> bool: ...
    @property
    def tags(self) -> bool: ...
    @property
    def resize(self) -> bool: ...
    @property
    def max_vcpus(self) -> Optional[int]: ...
    @property
    def max_memory_mib(self) -> Optional[int]: ...
    @property
    def max_disk_gib(self) -> Optional[int]: ...
    @property
    def max_networks(self) -> Optional[int]: ...
    def enabled(self) -> list[str]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Host:
    """A hypervisor host with its capacity and health (the operator view)."""

    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def available(self) -> bool: ...
    @property
    def unavailable_reason(self) -> Optional[str]: ...
    @property
    def vcpus_total(self) -> int: ...
    @property
    def vcpus_used(self) -> int: ...
    @property
    def memory_mib_total(self) -> int: ...
    @property
    def memory_mib_used(self) -> int: ...
    @property
    def vm_count(self) -> int: ...
    @property
    def capabilities(self) -> Capabilities: ...
    @property
    def observed_at(self) -> Optional[datetime]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class InventoryVm:
    """A VM as the last inventory found it on a host, HCP's or not (the operator view)."""

    @property
    def provider(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def cluster(self) -> Optional[str]: ...
    @property
    def native_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def power(self) -> str: ...
    @property
    def vm_id(self) -> Optional[str]: ...
    @property
    def project(self) -> Optional[str]: ...
    @property
    def adoptable(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Image:
    """A bootable image in the catalog."""

    @property
    def name(self) -> str: ...
    @property
    def os(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def min_disk_gib(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Flavor:
    """A named VM size in the catalog."""

    @property
    def name(self) -> str: ...
    @property
    def vcpus(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...
    @property
    def disk_gib(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Network:
    """A network VMs attach to."""

    @property
    def name(self) -> str: ...
    @property
    def vlan(self) -> Optional[int]: ...
    @property
    def zones(self) -> list[str]: ...
    @property
    def description(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Zone:
    """A placement zone."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Catalog:
    """What VMs are created from: images, flavors, networks and zones."""

    @property
    def images(self) -> list[Image]: ...
    @property
    def flavors(self) -> list[Flavor]: ...
    @property
    def networks(self) -> list[Network]: ...
    @property
    def zones(self) -> list[Zone]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Console:
    """A console connection to a running VM, valid until ``expires_at``."""

    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class JobLogs(Iterator[JobLogLine]):
    """A job's log lines as they are written, until the job ends."""

    @property
    def job_id(self) -> str: ...
    @property
    def job(self) -> Optional[Job]: ...
    def __iter__(self) -> JobLogs: ...
    def __next__(self) -> JobLogLine: ...

@final
class AsyncLogCursor:
    """The native cursor behind ``hcp.AsyncJobLogs`` (private)."""

    @property
    def job_id(self) -> str: ...
    @property
    def job(self) -> Optional[Job]: ...
    def next_async(self) -> asyncio.Future[Optional[JobLogLine]]: ...

@final
class Core:
    """The native half of every HCP client object (private)."""

    @staticmethod
    def embedded(
        *,
        path: Optional[str | os.PathLike[str]] = None,
        text: Optional[str] = None,
        json: Optional[str] = None,
        origin: Optional[str] = None,
        principal: str,
    ) -> Core: ...
    @staticmethod
    def remote(*, url: str, token: Optional[str] = None) -> Core: ...
    @property
    def closed(self) -> bool: ...
    def create_vm(
        self,
        project: str,
        name: str,
        image: str,
        flavor: Optional[str],
        *,
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
        networks: Optional[Sequence[str | Mapping[str, str]]],
        zone: Optional[str],
        user_data: Optional[str],
        tags: Optional[Mapping[str, str]],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def create_vm_async(
        self,
        project: str,
        name: str,
        image: str,
        flavor: Optional[str],
        *,
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
        networks: Optional[Sequence[str | Mapping[str, str]]],
        zone: Optional[str],
        user_data: Optional[str],
        tags: Optional[Mapping[str, str]],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def change_vm(
        self,
        operation: str,
        project: str,
        vm: str,
        *,
        force: bool,
        hard: bool,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def change_vm_async(
        self,
        operation: str,
        project: str,
        vm: str,
        *,
        force: bool,
        hard: bool,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def snapshot_vm(
        self,
        operation: str,
        project: str,
        vm: str,
        snapshot: str,
        *,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def snapshot_vm_async(
        self,
        operation: str,
        project: str,
        vm: str,
        snapshot: str,
        *,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def migrate_vm(
        self,
        vm: str,
        *,
        target_host: Optional[str],
        allow_cold: bool,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def migrate_vm_async(
        self,
        vm: str,
        *,
        target_host: Optional[str],
        allow_cold: bool,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def adopt_vm(
        self,
        project: str,
        host: str,
        vm: str,
        *,
        name: Optional[str],
        tags: Optional[Mapping[str, str]],
        provider: Optional[str],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def adopt_vm_async(
        self,
        project: str,
        host: str,
        vm: str,
        *,
        name: Optional[str],
        tags: Optional[Mapping[str, str]],
        provider: Optional[str],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def release_vm(
        self,
        vm: str,
        *,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def release_vm_async(
        self,
        vm: str,
        *,
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def resize_vm(
        self,
        project: str,
        vm: str,
        *,
        flavor: Optional[str],
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
        allow: list[str],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> Submitted: ...
    def resize_vm_async(
        self,
        project: str,
        vm: str,
        *,
        flavor: Optional[str],
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
        allow: list[str],
        idempotency_key: Optional[str],
        wait: bool,
        timeout: Optional[float],
    ) -> asyncio.Future[Submitted]: ...
    def plan_resize(
        self,
        project: str,
        vm: str,
        *,
        flavor: Optional[str],
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
    ) -> list[FieldPlan]: ...
    def plan_resize_async(
        self,
        project: str,
        vm: str,
        *,
        flavor: Optional[str],
        vcpus: Optional[int],
        memory_mib: Optional[int],
        disk_gib: Optional[int],
    ) -> asyncio.Future[list[FieldPlan]]: ...
    def list_snapshots(self, project: str, vm: str) -> list[Snapshot]: ...
    def list_snapshots_async(self, project: str, vm: str) -> asyncio.Future[list[Snapshot]]: ...
    def list_vms(
        self,
        project: str,
        *,
        name_prefix: Optional[str],
        tags: Optional[Mapping[str, str]],
        state: Optional[str],
        power: Optional[str],
        sort: Optional[str],
    ) -> list[Vm]: ...
    def list_vms_async(
        self,
        project: str,
        *,
        name_prefix: Optional[str],
        tags: Optional[Mapping[str, str]],
        state: Optional[str],
        power: Optional[str],
        sort: Optional[str],
    ) -> asyncio.Future[list[Vm]]: ...
    def get_vm(self, project: str, vm: str) -> Vm: ...
    def get_vm_async(self, project: str, vm: str) -> asyncio.Future[Vm]: ...
    def console(self, project: str, vm: str) -> Console: ...
    def console_async(self, project: str, vm: str) -> asyncio.Future[Console]: ...
    def get_job(self, job: str) -> Job: ...
    def get_job_async(self, job: str) -> asyncio.Future[Job]: ...
    def wait_job(self, job: str, timeout: Optional[float] = None) -> Job: ...
    def wait_job_async(self, job: str, timeout: Optional[float] = None) -> asyncio.Future[Job]: ...
    def job_logs(self, job: str) -> JobLogs: ...
    def job_logs_async(self, job: str) -> AsyncLogCursor: ...
    def hosts(self) -> list[Host]: ...
    def hosts_async(self) -> asyncio.Future[list[Host]]: ...
    def inventory_vms(self) -> list[InventoryVm]: ...
    def inventory_vms_async(self) -> asyncio.Future[list[InventoryVm]]: ...
    def catalog(self) -> Catalog: ...
    def catalog_async(self) -> asyncio.Future[Catalog]: ...
    def capabilities(self, zone: Optional[str] = None) -> Capabilities: ...
    def capabilities_async(self, zone: Optional[str] = None) -> asyncio.Future[Capabilities]: ...
    def close(self) -> None: ...
    def close_async(self) -> asyncio.Future[None]: ...
