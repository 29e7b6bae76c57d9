"""HCP's WinRM test host: a WS-Management server with real NTLM (sealed) and Basic authentication
that runs HCP's Hyper-V PowerShell scripts against an in-memory Hyper-V model."""

from .hyperv import ClusterStore, HyperVHost, PsError
from .scripts import ScriptRunner
from .server import Listener, start_control, start_listener, write_ntlm_user_file

__all__ = ["ClusterStore", "HyperVHost", "Listener", "PsError", "ScriptRunner", "start", "start_listener", "write_ntlm_user_file"]


def start(hosts: int = 1, username: str = "hcp", password: str = "hcp-test-password", cluster: str | None = None,
          base_port: int = 0, max_shells_per_user: int = 5, copy_seconds: float = 0.6, tls: bool = False,
          ntlm_binding: str = "connection", tls_cert: tuple[str, str] | None = None):
    """Starts `hosts` listeners on 127.0.0.1 (HTTPS with a self-signed certificate when `tls`, or
    with `tls_cert` = (certificate PEM path, key PEM path)); returns (listeners, servers); with
    TLS, each listener's `cert_path` names the certificate."""
    users = {username: password}
    context, cert_path = (None, None)
    if tls_cert:
        from .tls import given_context

        context, cert_path = given_context(*tls_cert)
    elif tls:
        from .tls import server_context

        context, cert_path = server_context()
    write_ntlm_user_file(users)
    runner = ScriptRunner()
    store = ClusterStore(cluster) if cluster else None
    listeners, servers = [], []
    for i in range(hosts):
        name = f"hv{i + 1}"
        hv = HyperVHost(name, store=store if store else ClusterStore(None), copy_seconds=copy_seconds)
        lst = Listener(name, users, hv, runner, max_shells_per_user=max_shells_per_user)
        lst.ntlm_binding = ntlm_binding
        servers.append(start_listener(lst, base_port + i if base_port else 0, tls=context))
        lst.cert_path = cert_path
        listeners.append(lst)
    control = start_control(listeners)
    servers.append(control)
    for lst in listeners:
        lst.control_port = control.server_address[1]
    return listeners, servers
