"""HCP, the Hypervisor Control Plane, from Python.

Create, run, watch and delete VMs on Hyper-V, Proxmox VE, libvirt or the
built-in simulator through one provider-agnostic API:

- :class:`Engine` runs HCP's engine inside this process (the simulator's demo catalog when no
  configuration is given); :class:`Client` talks to a running ``hcp serve``. Both offer the same
  blocking methods, which release the GIL and stop on Ctrl-C.
- :class:`AsyncEngine` and :class:`AsyncClient` offer the same methods as coroutines.
- Results are typed objects (:class:`Vm`, :class:`Job`, :class:`Host`, ...) with readable
  ``repr``s and ``to_dict()``; ``pandas.DataFrame([vm.to_dict() for vm in vms])`` makes a table.
- Every error subclasses :class:`HcpError`, one class per error kind.

Examples
--------
>>> import hcp
>>> engine = hcp.Engine()
>>> s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
>>> engine.list_vms("demo")
[Vm(id='vm-...', name='web-1', state='ACTIVE', power='RUNNING', zone='zone-a')]
>>> s.job.state
'SUCCEEDED'

Without a flavor, give the size; networks and tags take the HTTP API's shapes:

>>> s = engine.create_vm("demo", "db-1", "ubuntu-24.04", vcpus=2, memory_mib=4096, disk_gib=20,
...                      networks=[{"network": "default"}], tags={"team": "infra"}, wait=True)
>>> engine.get_vm("demo", s.vm_id).vcpus
2
"""

from ._aio import AsyncJobLogs
from ._api import (
    AsyncClient,
    AsyncEngine,
    Client,
    ConfigLike,
    Engine,
    GroupRef,
    JobRef,
    NetworkLike,
    VmRef,
)
from ._hcp import (
    Capabilities,
    Catalog,
    Console,
    ErrorInfo,
    FieldPlan,
    Flavor,
    Host,
    Image,
    InventoryVm,
    Job,
    JobLogLine,
    JobLogs,
    Network,
    ServerGroup,
    Snapshot,
    Submitted,
    Vm,
    Zone,
    __version__,
)
from .errors import (
    Cancelled,
    Conflict,
    FeatureNotSupported,
    HcpError,
    Internal,
    InvalidSpec,
    JobFailed,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    QuotaExceeded,
    Timeout,
    Unauthorized,
)

__all__ = [
    "__version__",
    # clients
    "Engine",
    "Client",
    "AsyncEngine",
    "AsyncClient",
    "ConfigLike",
    "VmRef",
    "JobRef",
    "NetworkLike",
    "GroupRef",
    # results
    "Vm",
    "Job",
    "JobLogLine",
    "JobLogs",
    "AsyncJobLogs",
    "FieldPlan",
    "ServerGroup",
    "Snapshot",
    "Submitted",
    "Host",
    "InventoryVm",
    "Capabilities",
    "Catalog",
    "Image",
    "Flavor",
    "Network",
    "Zone",
    "Console",
    "ErrorInfo",
    # errors
    "HcpError",
    "NotFound",
    "Conflict",
    "FeatureNotSupported",
    "InvalidSpec",
    "QuotaExceeded",
    "ProviderUnavailable",
    "ProviderError",
    "Timeout",
    "Cancelled",
    "Unauthorized",
    "Internal",
    "JobFailed",
]
