"""The public client classes: :class:`Engine`, :class:`Client`, :class:`AsyncEngine`, :class:`AsyncClient`.

All four offer the same methods. The engine classes run HCP's engine inside this process; the
client classes talk to a running ``hcp serve``. Blocking methods release the GIL while they wait
and raise ``KeyboardInterrupt`` promptly on Ctrl-C; async methods are coroutines that run on
the same shared runtime.
"""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

from . import _hcp
from ._aio import AsyncJobLogs
from ._hcp import (
    Capabilities,
    Catalog,
    Console,
    FieldPlan,
    Host,
    InventoryVm,
    Job,
    JobLogs,
    ServerGroup,
    Snapshot,
    Submitted,
    Vm,
)

__all__ = ["Engine", "Client", "AsyncEngine", "AsyncClient", "ConfigLike", "VmRef", "JobRef", "NetworkLike", "GroupRef"]

#: What ``config=`` accepts: a hosts-file path, the hosts file as a mapping, or ``None`` for the demo.
ConfigLike = Union[str, "os.PathLike[str]", Mapping[str, Any], None]
#: A VM: its id, or a :class:`Vm`.
VmRef = Union[str, Vm]
#: A network to attach: its catalog name, or ``{"network": name}`` as in the HTTP API's body.
NetworkLike = Union[str, Mapping[str, str]]
#: A job: its id, a :class:`Job`, or the :class:`Submitted` answer that started it.
JobRef = Union[str, Job, Submitted]

_Self = TypeVar("_Self", bound="_SyncApi")
_ASelf = TypeVar("_ASelf", bound="_AsyncApi")


def _vm_id(vm: VmRef) -> str:
    if isinstance(vm, Vm):
        return vm.id
    if isinstance(vm, str):
        return vm
    raise TypeError(f"vm must be a VM id (str) or an hcp.Vm, not {type(vm).__name__}")


def _snapshot_id(snapshot: Union[str, Snapshot]) -> str:
    return snapshot.id if isinstance(snapshot, Snapshot) else snapshot


#: A server group: its id, or a :class:`ServerGroup`.
GroupRef = Union[str, ServerGroup]


def _group_id(group: GroupRef) -> str:
    if isinstance(group, ServerGroup):
        return group.id
    if isinstance(group, str):
        return group
    raise TypeError(f"group must be a server group id (str) or an hcp.ServerGroup, not {type(group).__name__}")


def _job_id(job: JobRef) -> str:
    if isinstance(job, Job):
        return job.id
    if isinstance(job, Submitted):
        return job.job_id
    if isinstance(job, str):
        return job
    raise TypeError(f"job must be a job id (str), an hcp.Job or an hcp.Submitted, not {type(job).__name__}")


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"config values must be JSON-like (str, int, float, bool, None, list, dict), not {type(value).__name__}")


def _embedded_core(config: ConfigLike, principal: str) -> _hcp.Core:
    if config is None:
        return _hcp.Core.embedded(principal=principal)
    if isinstance(config, (str, os.PathLike)):
        return _hcp.Core.embedded(path=os.fspath(config), principal=principal)
    if isinstance(config, Mapping):
        # The engine renders it as YAML and parses it with the hosts-file parser, so errors name
        # the key (and a line of that rendering) exactly as for a file.
        text = json.dumps(config, default=_plain)
        return _hcp.Core.embedded(json=text, origin="config dict", principal=principal)
    raise TypeError(
        f"config must be a hosts-file path, a mapping or None (the demo), not {type(config).__name__}"
    )


def _remote_core(url: str, token: Optional[str]) -> _hcp.Core:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    return _hcp.Core.remote(url=url, token=token)


class _SyncApi:
    """The blocking methods :class:`Engine` and :class:`Client` share."""

    _core: _hcp.Core

    def create_vm(
        self,
        project: str,
        name: str,
        image: str,
        flavor: Optional[str] = None,
        *,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
        networks: Optional[Sequence[NetworkLike]] = None,
        zone: Optional[str] = None,
        user_data: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
        server_group: Optional[GroupRef] = None,
    ) -> Submitted:
        """Create (and start) a VM.

        Takes the same fields as the HTTP API's create body (and the CLI's ``hcp vm create``).
        Everything that can be refused is refused before any job exists: an argument of the
        wrong type, an invalid name, an unknown image, flavor, network or zone, a missing
        capability, exhausted capacity or quota.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        name : str
            The VM name: 1-63 characters of ``[a-z0-9-]``, starting with a letter, unique in
            the project.
        image : str
            A catalog image (see :meth:`catalog`).
        flavor : str, optional
            A catalog flavor. When ``None``, ``vcpus``, ``memory_mib`` and ``disk_gib`` are all
            required.
        vcpus : int, optional
            Explicit vCPUs (overrides the flavor's), 1-4096; the zone's providers may allow
            fewer.
        memory_mib : int, optional
            Explicit memory in MiB (overrides the flavor's), 16 MiB-64 TiB.
        disk_gib : int, optional
            Explicit disk size in GiB (overrides the flavor's), 1 GiB-1 PiB.
        networks : sequence of str or of {"network": str}, optional
            Catalog networks to attach, in order (at most 16): names, or dicts
            ``{"network": name}`` as in the HTTP API's body.
        zone : str, optional
            The placement zone; any zone that fits when ``None``.
        user_data : str, optional
            Cloud-init user-data (needs the ``cloud_init`` capability in the zone).
        tags : mapping of str to str, optional
            Free-form tags (at most 50).
        idempotency_key : str, optional
            Makes the call safe to retry: the same request with the same key returns the first
            answer (``replayed=True``) and creates nothing new.
        wait : bool, default False
            Wait until the create job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait; ``None`` waits as long as the job runs.
        server_group : str or ServerGroup, optional
            The server group the VM joins (see :meth:`create_server_group`); placement keeps
            its policy, and a hard one that cannot be met raises :class:`Conflict` with
            ``code == "SERVER_GROUP_POLICY"`` before any job exists.

        Returns
        -------
        Submitted
            The new VM's id and its job's id; with ``wait``, also the finished job.

        Raises
        ------
        InvalidSpec
            A bad argument, including one of the wrong type (``tags="team=infra"``);
            ``field`` names it (``"tags"``, ``"networks[0]"``, ``"vcpus"``).
        FeatureNotSupported
            The zone lacks a capability the request needs (``user_data`` in a zone without
            cloud-init, say).
        Conflict
            The name is taken, or the idempotency key was used for a different request
            (``code == "IDEMPOTENCY_KEY_REUSED"``).
        QuotaExceeded
            No host has room, or the project quota is used up.
        JobFailed
            With ``wait``, the job failed; ``job_id`` and ``code`` say which and why.
        Timeout
            With ``wait`` and ``timeout``, the job did not end in time (it goes on).

        Examples
        --------
        >>> import hcp
        >>> engine = hcp.Engine()
        >>> s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
        >>> engine.get_vm("demo", s.vm_id).state
        'ACTIVE'
        >>> engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
        Traceback (most recent call last):
        ...
        hcp.errors.Conflict: a VM named `web-1` already exists in project `demo` (vm-...)
        >>> s = engine.create_vm("demo", "db-1", "ubuntu-24.04", vcpus=2, memory_mib=2048,
        ...                      disk_gib=20, networks=["default"], wait=True)
        >>> vm = engine.get_vm("demo", s.vm_id)
        >>> (vm.flavor, vm.vcpus, vm.memory_mib, vm.disk_gib, vm.networks)
        (None, 2, 2048, 20, ['default'])
        >>> engine.create_vm("demo", "web-2", "ubuntu-24.04", "small", tags="team=infra")
        Traceback (most recent call last):
        ...
        hcp.errors.InvalidSpec: tags: must be a mapping of str to str (such as {"team": "infra"}), not str
        """
        return self._core.create_vm(
            project,
            name,
            image,
            flavor,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_gib=disk_gib,
            networks=networks,
            zone=zone,
            user_data=user_data,
            tags=tags,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
            server_group=None if server_group is None else _group_id(server_group),
        )

    def list_vms(
        self,
        project: str,
        *,
        name_prefix: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        state: Optional[str] = None,
        power: Optional[str] = None,
        sort: Optional[str] = None,
    ) -> list[Vm]:
        """List a project's VMs, by id (oldest first) unless ``sort`` says otherwise.

        The filters combine: a VM is listed when it matches all of them.

        Parameters
        ----------
        project : str
            The project.
        name_prefix : str, optional
            Only VMs whose name starts with this text (case-sensitive).
        tags : Mapping[str, str], optional
            Only VMs that carry every one of these tags with these values.
        state : str, optional
            Only VMs in this state: ``"PENDING"``, ``"ACTIVE"``, ``"ERROR"`` or ``"DELETED"``
            (any case).
        power : str, optional
            Only VMs in this observed power state: ``"RUNNING"``, ``"STOPPED"``, ``"PAUSED"`` or
            ``"UNKNOWN"`` (any case).
        sort : str, optional
            ``"name"``, ``"-name"``, ``"created_at"`` or ``"-created_at"`` (``-``: largest
            first); ties are broken by VM id.

        Returns
        -------
        list of Vm
            Convert to a table with ``pandas.DataFrame([vm.to_dict() for vm in vms])``.

        Raises
        ------
        InvalidSpec
            An invalid project id, or a filter or sort value that is not allowed (the message
            names the argument and lists the allowed values).
        """
        return self._core.list_vms(
            project, name_prefix=name_prefix, tags=tags, state=state, power=power, sort=sort
        )

    def get_vm(self, project: str, vm: VmRef) -> Vm:
        """Return one VM.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.

        Returns
        -------
        Vm

        Raises
        ------
        NotFound
            No such VM in ``project``.
        """
        return self._core.get_vm(project, _vm_id(vm))

    def start_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Power a VM on.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM in ``project``.
        JobFailed
            With ``wait``, the job failed.
        Timeout
            With ``wait`` and ``timeout``, the job did not end in time.
        """
        return self._core.change_vm(
            "start", project, _vm_id(vm), force=False, hard=False,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def stop_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        force: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Power a VM off: a graceful shutdown first, then a hard power-off.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        force : bool, default False
            Power off at once, skipping the graceful shutdown.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM in ``project``.
        JobFailed
            With ``wait``, the job failed.
        Timeout
            With ``wait`` and ``timeout``, the job did not end in time.
        """
        return self._core.change_vm(
            "stop", project, _vm_id(vm), force=force, hard=False,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def reboot_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        hard: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Restart a running VM.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        hard : bool, default False
            Reset instead of a guest reboot.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM in ``project``.
        JobFailed
            With ``wait``, the job failed (a VM that is not running cannot reboot).
        Timeout
            With ``wait`` and ``timeout``, the job did not end in time.
        """
        return self._core.change_vm(
            "reboot", project, _vm_id(vm), force=False, hard=hard,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def delete_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        force: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Delete a VM and its disks.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        force : bool, default False
            Skip the graceful shutdown of a running VM. Without it a running VM is shut down
            gracefully, then powered off hard after the stop timeout, then deleted.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM in ``project``.
        JobFailed
            With ``wait``, the job failed.
        Timeout
            With ``wait`` and ``timeout``, the job did not end in time.
        """
        return self._core.change_vm(
            "delete", project, _vm_id(vm), force=force, hard=False,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def migrate_vm(
        self,
        vm: VmRef,
        *,
        target_host: Optional[str] = None,
        allow_cold: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Move a VM to another host of its provider and zone, live or cold (operators).

        The VM may belong to any project; the job is recorded in the VM's project. Tenants
        never see hosts: they see the job, not where it moved the VM.

        Parameters
        ----------
        vm : str or Vm
            The VM's id, or the VM.
        target_host : str, optional
            The host to move to. Without it, HCP picks another reachable host of the VM's zone
            with its image and room for it (see :meth:`hosts`).
        allow_cold : bool, default False
            Accept a cold move where no live one is possible (a stopped VM, or a host that
            cannot move running VMs): HCP stops the VM, moves it and starts it again, so it is
            unavailable meanwhile. The hosts must declare ``cold_migration``.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM.
        InvalidSpec
            ``target_host`` is the VM's own host, a host of another provider or zone, unknown,
            or lacks the VM's image; or the zone has no other host (``field`` is
            ``target_host``).
        Conflict
            The VM is stopped and ``allow_cold`` is not set (``code`` is
            ``VM_STATE_CONFLICT``), or its hard server group rules the move out (``code`` is
            ``SERVER_GROUP_POLICY``).
        QuotaExceeded
            No candidate host has room for the VM (``code`` is ``CAPACITY_EXHAUSTED``).
        FeatureNotSupported
            The VM's host cannot move it live (the message says whether ``allow_cold`` would
            help), or cold where a cold move was allowed.
        Unauthorized
            Through a service, a caller without the operator role.
        JobFailed
            With ``wait``, the job failed.
        """
        return self._core.migrate_vm(
            _vm_id(vm), target_host=target_host, allow_cold=allow_cold,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def adopt_vm(
        self,
        project: str,
        host: str,
        vm: str,
        *,
        name: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        provider: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Take a VM created outside HCP into ``project`` (operators).

        A job writes HCP's mark (the VM's id and project) on the VM and makes it ``ACTIVE``;
        nothing else about the VM changes. :meth:`inventory_vms` lists the adoptable VMs.

        Parameters
        ----------
        project : str
            The project that will own the VM.
        host : str
            The host the VM is on, as :meth:`inventory_vms` reports it.
        vm : str
            The VM's native id or name on that host, as :meth:`inventory_vms` reports it.
        name : str, optional
            The VM's name in HCP; the hypervisor's name when ``None``.
        tags : mapping of str to str, optional
            The VM's tags in HCP; the hypervisor's tags when ``None``.
        provider : str, optional
            The host's provider; needed only when hosts of several providers share the name.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        InvalidSpec
            A bad ``project``, ``host``, ``provider``, ``name`` or ``tags`` (``field`` names it).
        NotFound
            The host has no such VM.
        Conflict
            HCP already manages the VM, or the name is taken in the project.
        QuotaExceeded
            The VM does not fit the project's quota.
        FeatureNotSupported
            The host cannot write HCP's mark, or adoption is switched off.
        Unauthorized
            Through a service, a caller without the operator role.
        JobFailed
            With ``wait``, the job failed.
        """
        return self._core.adopt_vm(
            project, host, vm, name=name, tags=tags, provider=provider,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def release_vm(
        self,
        vm: VmRef,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Give a VM back (operators): remove HCP's mark from it and forget it.

        The VM itself stays as it is, running or not, on its host; it shows up in
        :meth:`inventory_vms` as unmanaged again.

        Parameters
        ----------
        vm : str or Vm
            The VM's id, or the VM.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM.
        Conflict
            The VM is still being created or adopted (``code`` is ``VM_STATE_CONFLICT``).
        FeatureNotSupported
            The VM's host cannot remove HCP's mark.
        Unauthorized
            Through a service, a caller without the operator role.
        JobFailed
            With ``wait``, the job failed.
        """
        return self._core.release_vm(
            _vm_id(vm), idempotency_key=idempotency_key, wait=wait, timeout=timeout
        )

    def resize_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        flavor: Optional[str] = None,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
        allow: Sequence[str] = ("hot",),
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Resize a VM in place, applying only what ``allow`` accepts.

        Each changed field is planned as by :meth:`plan_resize`; a field whose impact is not in
        ``allow`` is refused before any job. ``recreate`` and ``data_destructive`` (shrinking a
        disk) are always refused. The job restarts the VM when a ``reboot`` is needed and
        allowed, or stops and starts it for ``power_off``; the VM's spec changes once its
        hypervisor applied the new size.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        flavor : str, optional
            A catalog flavor to move to.
        vcpus, memory_mib, disk_gib : int, optional
            Explicit sizes (override the flavor's); absent ones keep the VM's value.
        allow : sequence of str, default ("hot",)
            What the change may take: ``hot``, ``reboot``, ``power_off``.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted

        Raises
        ------
        Conflict
            A field needs more than ``allow`` accepts (``code`` is ``RESIZE_NOT_ALLOWED``,
            ``field`` names it), or a disk would shrink.
        QuotaExceeded
            The growth exceeds the project's quota or the host's room.
        InvalidSpec
            An unknown flavor, a size outside the bounds, or nothing to change.
        FeatureNotSupported
            The VM's hypervisor cannot resize in place.
        JobFailed
            With ``wait``, the job failed.
        """
        if isinstance(allow, str):
            allow = (allow,)
        return self._core.resize_vm(
            project, _vm_id(vm), flavor=flavor, vcpus=vcpus, memory_mib=memory_mib,
            disk_gib=disk_gib, allow=list(allow), idempotency_key=idempotency_key, wait=wait,
            timeout=timeout,
        )

    def plan_resize(
        self,
        project: str,
        vm: VmRef,
        *,
        flavor: Optional[str] = None,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
    ) -> list[FieldPlan]:
        """Plan a resize without changing anything.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        flavor : str, optional
            A catalog flavor to move to.
        vcpus, memory_mib, disk_gib : int, optional
            Explicit sizes (override the flavor's); absent ones keep the VM's value.

        Returns
        -------
        list of FieldPlan
            One per field that would change: ``impact`` is ``hot``, ``reboot``, ``power_off``,
            ``recreate`` or ``data_destructive`` for this VM's hypervisor and power state, with
            the ``reason``.

        Raises
        ------
        NotFound
            No such VM in ``project``.
        InvalidSpec
            An unknown flavor or a size outside the bounds (``field`` names it).
        """
        return self._core.plan_resize(
            project, _vm_id(vm), flavor=flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        )

    def create_snapshot(
        self,
        project: str,
        vm: VmRef,
        name: str,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Take a snapshot of a VM; a running VM's snapshot holds its memory state.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        name : str
            The snapshot's name, unique per VM: 1-63 lowercase letters, digits and ``-``,
            starting with a letter.
        idempotency_key : str, optional
            Replays the first answer when the same request is sent again with this key.
        wait : bool, default False
            Wait until the job ends.
        timeout : float, optional
            With ``wait``, the most seconds to wait.

        Returns
        -------
        Submitted
            ``snapshot_id`` is HCP's id of the new snapshot.

        Raises
        ------
        InvalidSpec
            ``name`` is not a valid name (``field == "name"``).
        Conflict
            The VM already has a snapshot of that name (``field == "name"``).
        QuotaExceeded
            The VM has as many snapshots as ``engine.max_snapshots_per_vm`` allows.
        FeatureNotSupported
            The VM's host cannot take snapshots.
        """
        return self._core.snapshot_vm(
            "create", project, _vm_id(vm), name,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def create_server_group(
        self,
        project: str,
        name: str,
        policy: str,
        *,
        strength: str = "hard",
    ) -> ServerGroup:
        """Create a server group: VMs created into it are placed apart or together.

        Parameters
        ----------
        project : str
            The project.
        name : str
            The group's name, unique in the project: 1-63 characters of ``[a-z0-9-]``,
            starting with a letter.
        policy : str
            ``"anti-affinity"`` (members on different hosts) or ``"affinity"`` (one host).
        strength : str, default "hard"
            ``"hard"`` (never broken: a create that cannot keep it raises :class:`Conflict`
            with ``code == "SERVER_GROUP_POLICY"``) or ``"soft"`` (preferred while hosts have
            room).

        Returns
        -------
        ServerGroup

        Raises
        ------
        InvalidSpec
            A bad ``name``, ``policy`` or ``strength``; ``field`` names it.
        Conflict
            The project has a group of that name.

        Examples
        --------
        >>> import hcp
        >>> engine = hcp.Engine()
        >>> g = engine.create_server_group("demo", "web", "anti-affinity")
        >>> (g.policy, g.strength, g.members)
        ('anti-affinity', 'hard', [])
        """
        return self._core.create_server_group(project, name, policy, strength)

    def list_server_groups(self, project: str) -> list[ServerGroup]:
        """List a project's server groups, by id, each with its member VM ids.

        Returns
        -------
        list of ServerGroup
        """
        return self._core.list_server_groups(project)

    def get_server_group(self, project: str, group: GroupRef) -> ServerGroup:
        """Return a server group with its member VM ids.

        Raises
        ------
        NotFound
            No such group in ``project``.
        """
        return self._core.get_server_group(project, _group_id(group))

    def delete_server_group(self, project: str, group: GroupRef) -> None:
        """Delete an empty server group.

        Raises
        ------
        NotFound
            No such group in ``project``.
        Conflict
            VMs are still in it (``code == "SERVER_GROUP_NOT_EMPTY"``): delete them first.
        """
        self._core.delete_server_group(project, _group_id(group))

    def list_snapshots(self, project: str, vm: VmRef) -> list[Snapshot]:
        """List a VM's snapshots, oldest first.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.

        Returns
        -------
        list of Snapshot

        Raises
        ------
        NotFound
            No such VM in ``project``.
        FeatureNotSupported
            The VM's host cannot take snapshots.
        """
        return self._core.list_snapshots(project, _vm_id(vm))

    def revert_snapshot(
        self,
        project: str,
        vm: VmRef,
        snapshot: Union[str, Snapshot],
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Return a VM to a snapshot.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        snapshot : str or Snapshot
            The snapshot's id (``snap-…``), or the snapshot.
        idempotency_key, wait, timeout
            As for :meth:`create_snapshot`.

        Returns
        -------
        Submitted
            ``memory_state_kept`` is ``True`` when the snapshot holds memory state (the VM
            comes back running where it was) and ``False`` when it holds disks only (the VM
            ends stopped).

        Raises
        ------
        NotFound
            No such VM, or no such snapshot (``field == "snapshot_id"``).
        """
        return self._core.snapshot_vm(
            "revert", project, _vm_id(vm), _snapshot_id(snapshot),
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def delete_snapshot(
        self,
        project: str,
        vm: VmRef,
        snapshot: Union[str, Snapshot],
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Delete a snapshot; the VM keeps its current state.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.
        snapshot : str or Snapshot
            The snapshot's id (``snap-…``), or the snapshot.
        idempotency_key, wait, timeout
            As for :meth:`create_snapshot`.

        Returns
        -------
        Submitted

        Raises
        ------
        NotFound
            No such VM, or no such snapshot (``field == "snapshot_id"``).
        """
        return self._core.snapshot_vm(
            "delete", project, _vm_id(vm), _snapshot_id(snapshot),
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    def console(self, project: str, vm: VmRef) -> Console:
        """Hand out a console connection to a running VM.

        Parameters
        ----------
        project : str
            The project the VM belongs to.
        vm : str or Vm
            The VM's id, or the VM.

        Returns
        -------
        Console
            Its ``url`` carries a one-time token valid until ``expires_at``.

        Raises
        ------
        NotFound
            No such VM in ``project``.
        FeatureNotSupported
            The VM's host offers no console.
        Conflict
            The VM is not active or not running.
        """
        return self._core.console(project, _vm_id(vm))

    def get_job(self, job: JobRef) -> Job:
        """Return a job as it is now.

        Parameters
        ----------
        job : str, Job or Submitted
            The job's id, the job, or the answer that started it.

        Returns
        -------
        Job

        Raises
        ------
        NotFound
            No such job.
        """
        return self._core.get_job(_job_id(job))

    def wait_job(self, job: JobRef, timeout: Optional[float] = None) -> Job:
        """Wait until a job ends and return it.

        The job is returned in whatever state it ended (``SUCCEEDED``, ``FAILED`` or
        ``CANCELLED``); call :meth:`Job.raise_for_state` to turn a failure into
        :class:`JobFailed`. Ctrl-C stops the wait (not the job) with ``KeyboardInterrupt``.

        Parameters
        ----------
        job : str, Job or Submitted
            The job's id, the job, or the answer that started it.
        timeout : float, optional
            The most seconds to wait; ``None`` waits as long as the job runs.

        Returns
        -------
        Job
            The job in its final state.

        Raises
        ------
        NotFound
            No such job.
        Timeout
            The job did not end within ``timeout`` (it goes on); ``job_id`` names it.
        """
        return self._core.wait_job(_job_id(job), timeout)

    def job_logs(self, job: JobRef) -> JobLogs:
        """Follow a job's log: past lines first, then live lines as they are written.

        The iteration ends when the job ends; the iterator's ``job`` attribute then holds the
        job in its final state.

        Parameters
        ----------
        job : str, Job or Submitted
            The job's id, the job, or the answer that started it.

        Returns
        -------
        JobLogs
            An iterator of :class:`JobLogLine`.

        Raises
        ------
        NotFound
            No such job (raised by this call, before iterating).

        Examples
        --------
        >>> import hcp
        >>> engine = hcp.Engine()
        >>> submitted = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
        >>> logs = engine.job_logs(submitted)
        >>> for line in logs:
        ...     print(line.message)
        attempt 1/4: create_vm web-1...
        created web-1...
        create_vm succeeded
        >>> logs.job.state
        'SUCCEEDED'
        """
        return self._core.job_logs(_job_id(job))

    def hosts(self) -> list[Host]:
        """List the hypervisor hosts with their capacity, health and capabilities.

        Returns
        -------
        list of Host
        """
        return self._core.hosts()

    def inventory_vms(self) -> list[InventoryVm]:
        """List every VM the last inventory found on the hosts, HCP's and others (operators).

        Returns
        -------
        list of InventoryVm
            ``adoptable`` marks the VMs :meth:`adopt_vm` can take.

        Raises
        ------
        Unauthorized
            Through a service, a caller without the operator role.
        """
        return self._core.inventory_vms()

    def catalog(self) -> Catalog:
        """Return what VMs are created from: images, flavors, networks and zones.

        Returns
        -------
        Catalog
        """
        return self._core.catalog()

    def capabilities(self, zone: Optional[str] = None) -> Capabilities:
        """Return what can be asked for in a zone (any of its hosts), or anywhere.

        Parameters
        ----------
        zone : str, optional
            The zone; every zone when ``None``.

        Returns
        -------
        Capabilities

        Raises
        ------
        InvalidSpec
            An unknown zone (``field == "zone"``).
        """
        return self._core.capabilities(zone)

    def close(self) -> None:
        """Stop background work and release resources; later calls raise ``RuntimeError``.

        Closing twice is harmless. The object is also a context manager that closes on exit.
        """
        self._core.close()

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` was called."""
        return self._core.closed

    def __enter__(self: "_Self") -> "_Self":
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._core)


class Engine(_SyncApi):
    """HCP's engine, embedded in this Python process.

    Runs HCP exactly as ``hcp serve`` does, without a server: jobs run in the background on a
    shared runtime while Python waits or does other work.

    Parameters
    ----------
    config : str, os.PathLike, mapping or None, default None
        A hosts-file path, the hosts file as a mapping (``{"providers": [...], "zones": [...],
        "catalog": {...}}``), or ``None`` for the simulator's demo catalog (project ``demo``,
        zones ``zone-a`` and ``zone-b``, images ``ubuntu-24.04`` and ``windows-2022``, flavors
        ``small`` and ``medium``). Environment variables such as ``INVENTORY_REFRESH_INTERVAL``
        apply on top, as for ``hcp serve``.
    principal : str, default "python"
        Who the engine's jobs and audit events are attributed to.

    Raises
    ------
    InvalidSpec
        A bad configuration; the message names the key and line.

    Examples
    --------
    >>> import hcp
    >>> with hcp.Engine() as engine:
    ...     s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    ...     print(engine.list_vms("demo"))
    [Vm(id='vm-...', name='web-1', state='ACTIVE', power='RUNNING', zone='zone-a')]
    """

    def __init__(self, config: ConfigLike = None, *, principal: str = "python") -> None:
        self._core = _embedded_core(config, principal)


class Client(_SyncApi):
    """A client of a running HCP service (``hcp serve``).

    Parameters
    ----------
    url : str
        The service's base URL, e.g. ``"http://127.0.0.1:8080"``.
    token : str, optional
        A bearer token, when the service requires authentication.

    Raises
    ------
    InvalidSpec
        A malformed URL.

    Examples
    --------
    With ``hcp serve`` listening on 127.0.0.1:8080::

        client = hcp.Client("http://127.0.0.1:8080")
        for vm in client.list_vms("demo"):
            print(vm.name, vm.state)
    """

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self._core = _remote_core(url, token)


class _AsyncApi:
    """The coroutine methods :class:`AsyncEngine` and :class:`AsyncClient` share.

    Each method has the same parameters, results and exceptions as its blocking twin in
    :class:`Engine`; see there for details.
    """

    _core: _hcp.Core

    async def create_vm(
        self,
        project: str,
        name: str,
        image: str,
        flavor: Optional[str] = None,
        *,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
        networks: Optional[Sequence[NetworkLike]] = None,
        zone: Optional[str] = None,
        user_data: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
        server_group: Optional[GroupRef] = None,
    ) -> Submitted:
        """Create (and start) a VM; see :meth:`Engine.create_vm`.

        Parameters
        ----------
        project, name, image : str
            The project, VM name and catalog image.
        flavor, vcpus, memory_mib, disk_gib, networks, zone, user_data, tags, idempotency_key, wait, timeout
            As for :meth:`Engine.create_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.create_vm_async(
            project,
            name,
            image,
            flavor,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_gib=disk_gib,
            networks=networks,
            zone=zone,
            user_data=user_data,
            tags=tags,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
            server_group=None if server_group is None else _group_id(server_group),
        )

    async def list_vms(
        self,
        project: str,
        *,
        name_prefix: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        state: Optional[str] = None,
        power: Optional[str] = None,
        sort: Optional[str] = None,
    ) -> list[Vm]:
        """List a project's VMs, filtered and sorted; see :meth:`Engine.list_vms`.

        Returns
        -------
        list of Vm
        """
        return await self._core.list_vms_async(
            project, name_prefix=name_prefix, tags=tags, state=state, power=power, sort=sort
        )

    async def get_vm(self, project: str, vm: VmRef) -> Vm:
        """Return one VM; see :meth:`Engine.get_vm`.

        Returns
        -------
        Vm
        """
        return await self._core.get_vm_async(project, _vm_id(vm))

    async def start_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Power a VM on; see :meth:`Engine.start_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.change_vm_async(
            "start",
            project,
            _vm_id(vm),
            force=False,
            hard=False,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def stop_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        force: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Power a VM off; see :meth:`Engine.stop_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.change_vm_async(
            "stop",
            project,
            _vm_id(vm),
            force=force,
            hard=False,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def reboot_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        hard: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Restart a running VM; see :meth:`Engine.reboot_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.change_vm_async(
            "reboot",
            project,
            _vm_id(vm),
            force=False,
            hard=hard,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def delete_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        force: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Delete a VM and its disks; see :meth:`Engine.delete_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.change_vm_async(
            "delete",
            project,
            _vm_id(vm),
            force=force,
            hard=False,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def migrate_vm(
        self,
        vm: VmRef,
        *,
        target_host: Optional[str] = None,
        allow_cold: bool = False,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Move a running VM to another host of its zone (operators); see :meth:`Engine.migrate_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.migrate_vm_async(
            _vm_id(vm),
            target_host=target_host,
            allow_cold=allow_cold,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def adopt_vm(
        self,
        project: str,
        host: str,
        vm: str,
        *,
        name: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        provider: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Take a VM created outside HCP into ``project`` (operators); see :meth:`Engine.adopt_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.adopt_vm_async(
            project,
            host,
            vm,
            name=name,
            tags=tags,
            provider=provider,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
        )

    async def release_vm(
        self,
        vm: VmRef,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Give a VM back (operators); see :meth:`Engine.release_vm`.

        Returns
        -------
        Submitted
        """
        return await self._core.release_vm_async(
            _vm_id(vm), idempotency_key=idempotency_key, wait=wait, timeout=timeout
        )

    async def resize_vm(
        self,
        project: str,
        vm: VmRef,
        *,
        flavor: Optional[str] = None,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
        allow: Sequence[str] = ("hot",),
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Resize a VM in place, applying only what ``allow`` accepts; see
        :meth:`Engine.resize_vm`.

        Returns
        -------
        Submitted
        """
        if isinstance(allow, str):
            allow = (allow,)
        return await self._core.resize_vm_async(
            project, _vm_id(vm), flavor=flavor, vcpus=vcpus, memory_mib=memory_mib,
            disk_gib=disk_gib, allow=list(allow), idempotency_key=idempotency_key, wait=wait,
            timeout=timeout,
        )

    async def plan_resize(
        self,
        project: str,
        vm: VmRef,
        *,
        flavor: Optional[str] = None,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_gib: Optional[int] = None,
    ) -> list[FieldPlan]:
        """Plan a resize without changing anything; see :meth:`Engine.plan_resize`.

        Returns
        -------
        list of FieldPlan
        """
        return await self._core.plan_resize_async(
            project, _vm_id(vm), flavor=flavor, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        )

    async def create_snapshot(
        self,
        project: str,
        vm: VmRef,
        name: str,
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Take a snapshot of a VM; see :meth:`Engine.create_snapshot`.

        Returns
        -------
        Submitted
        """
        return await self._core.snapshot_vm_async(
            "create", project, _vm_id(vm), name,
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    async def create_server_group(
        self,
        project: str,
        name: str,
        policy: str,
        *,
        strength: str = "hard",
    ) -> ServerGroup:
        """Create a server group; see :meth:`Engine.create_server_group`.

        Returns
        -------
        ServerGroup
        """
        return await self._core.create_server_group_async(project, name, policy, strength)

    async def list_server_groups(self, project: str) -> list[ServerGroup]:
        """List a project's server groups; see :meth:`Engine.list_server_groups`.

        Returns
        -------
        list of ServerGroup
        """
        return await self._core.list_server_groups_async(project)

    async def get_server_group(self, project: str, group: GroupRef) -> ServerGroup:
        """Return a server group; see :meth:`Engine.get_server_group`.

        Returns
        -------
        ServerGroup
        """
        return await self._core.get_server_group_async(project, _group_id(group))

    async def delete_server_group(self, project: str, group: GroupRef) -> None:
        """Delete an empty server group; see :meth:`Engine.delete_server_group`."""
        await self._core.delete_server_group_async(project, _group_id(group))

    async def list_snapshots(self, project: str, vm: VmRef) -> list[Snapshot]:
        """List a VM's snapshots; see :meth:`Engine.list_snapshots`.

        Returns
        -------
        list of Snapshot
        """
        return await self._core.list_snapshots_async(project, _vm_id(vm))

    async def revert_snapshot(
        self,
        project: str,
        vm: VmRef,
        snapshot: Union[str, Snapshot],
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Return a VM to a snapshot; see :meth:`Engine.revert_snapshot`.

        Returns
        -------
        Submitted
        """
        return await self._core.snapshot_vm_async(
            "revert", project, _vm_id(vm), _snapshot_id(snapshot),
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    async def delete_snapshot(
        self,
        project: str,
        vm: VmRef,
        snapshot: Union[str, Snapshot],
        *,
        idempotency_key: Optional[str] = None,
        wait: bool = False,
        timeout: Optional[float] = None,
    ) -> Submitted:
        """Delete a snapshot; see :meth:`Engine.delete_snapshot`.

        Returns
        -------
        Submitted
        """
        return await self._core.snapshot_vm_async(
            "delete", project, _vm_id(vm), _snapshot_id(snapshot),
            idempotency_key=idempotency_key, wait=wait, timeout=timeout,
        )

    async def console(self, project: str, vm: VmRef) -> Console:
        """Hand out a console connection to a running VM; see :meth:`Engine.console`.

        Returns
        -------
        Console
        """
        return await self._core.console_async(project, _vm_id(vm))

    async def get_job(self, job: JobRef) -> Job:
        """Return a job as it is now; see :meth:`Engine.get_job`.

        Returns
        -------
        Job
        """
        return await self._core.get_job_async(_job_id(job))

    async def wait_job(self, job: JobRef, timeout: Optional[float] = None) -> Job:
        """Wait until a job ends and return it; see :meth:`Engine.wait_job`.

        Returns
        -------
        Job
            The job in its final state.

        Raises
        ------
        Timeout
            The job did not end within ``timeout`` (it goes on).
        """
        return await self._core.wait_job_async(_job_id(job), timeout)

    def job_logs(self, job: JobRef) -> AsyncJobLogs:
        """Follow a job's log with ``async for``: past lines, then live lines, until it ends.

        This method is not a coroutine: it returns the async iterator at once, and an unknown
        job raises :class:`NotFound` on the first iteration.

        Parameters
        ----------
        job : str, Job or Submitted
            The job's id, the job, or the answer that started it.

        Returns
        -------
        AsyncJobLogs
            An async iterator of :class:`JobLogLine`; its ``job`` attribute holds the final job
            once the iteration ends.

        Examples
        --------
        >>> import asyncio, hcp
        >>> async def follow() -> None:
        ...     async with hcp.AsyncEngine() as engine:
        ...         submitted = await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
        ...         async for line in engine.job_logs(submitted):
        ...             print(line.message)
        >>> asyncio.run(follow())
        attempt 1/4: create_vm web-1...
        created web-1...
        create_vm succeeded
        """
        return AsyncJobLogs(self._core.job_logs_async(_job_id(job)))

    async def hosts(self) -> list[Host]:
        """List the hypervisor hosts; see :meth:`Engine.hosts`.

        Returns
        -------
        list of Host
        """
        return await self._core.hosts_async()

    async def inventory_vms(self) -> list[InventoryVm]:
        """List every VM the last inventory found on the hosts; see :meth:`Engine.inventory_vms`.

        Returns
        -------
        list of InventoryVm
        """
        return await self._core.inventory_vms_async()

    async def catalog(self) -> Catalog:
        """Return the catalog; see :meth:`Engine.catalog`.

        Returns
        -------
        Catalog
        """
        return await self._core.catalog_async()

    async def capabilities(self, zone: Optional[str] = None) -> Capabilities:
        """Return what can be asked for in a zone, or anywhere; see :meth:`Engine.capabilities`.

        Returns
        -------
        Capabilities
        """
        return await self._core.capabilities_async(zone)

    async def close(self) -> None:
        """Stop background work and release resources; later calls raise ``RuntimeError``.

        The object is also an async context manager that closes on exit.
        """
        await self._core.close_async()

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` was called."""
        return self._core.closed

    async def __aenter__(self: "_ASelf") -> "_ASelf":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Async{self._core!r}"


class AsyncEngine(_AsyncApi):
    """HCP's engine embedded in this process, with coroutine methods for asyncio.

    Parameters
    ----------
    config : str, os.PathLike, mapping or None, default None
        As for :class:`Engine`.
    principal : str, default "python"
        Who the engine's jobs and audit events are attributed to.

    Examples
    --------
    >>> import asyncio, hcp
    >>> async def main() -> list[str]:
    ...     async with hcp.AsyncEngine() as engine:
    ...         await engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    ...         return [vm.name for vm in await engine.list_vms("demo")]
    >>> asyncio.run(main())
    ['web-1']
    """

    def __init__(self, config: ConfigLike = None, *, principal: str = "python") -> None:
        self._core = _embedded_core(config, principal)


class AsyncClient(_AsyncApi):
    """A client of a running HCP service, with coroutine methods for asyncio.

    Parameters
    ----------
    url : str
        The service's base URL, e.g. ``"http://127.0.0.1:8080"``.
    token : str, optional
        A bearer token, when the service requires authentication.
    """

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        self._core = _remote_core(url, token)
