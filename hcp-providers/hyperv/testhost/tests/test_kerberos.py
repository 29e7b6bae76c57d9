"""pypsrp holds the test host's Kerberos honest: against a real MIT KDC (`kdc.sh`, realm
HCP.TEST on loopback), SPNEGO with WinRM message encryption over HTTP and Kerberos over HTTPS
with certificate validation, both run HCP's scripts; a ticket for a principal the KDC does not
know fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan

import hcp_winrm_testhost
from conftest import PASSWORD, USER, deploy_text, encode_command, param_doc

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kdc(tmp_path_factory):
    out = subprocess.run([str(HERE / "kdc.sh")], check=True, capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    cache = tmp_path_factory.mktemp("krb5") / "ccache"
    env = dict(os.environ, KRB5_CONFIG=info["krb5_conf"], KRB5CCNAME=f"FILE:{cache}")
    subprocess.run(["kinit", info["py_user"]], input=info["py_password"] + "\n", env=env,
                   check=True, capture_output=True, text=True)
    # The client (pypsrp) and the acceptor (the test host) run in this process, as MIT reads them.
    os.environ["KRB5_CONFIG"] = info["krb5_conf"]
    os.environ["KRB5CCNAME"] = f"FILE:{cache}"
    os.environ["KRB5_KTNAME"] = f"FILE:{info['service_keytab']}"
    return info


@pytest.fixture(scope="module")
def hosts(kdc):
    plain, s1 = hcp_winrm_testhost.start(1, USER, PASSWORD, copy_seconds=0.05)
    tls, s2 = hcp_winrm_testhost.start(1, USER, PASSWORD, copy_seconds=0.05, tls=True)
    yield plain[0], tls[0]
    for s in s1 + s2:
        s.shutdown()


def run_deployment_probe(wsman: WSMan) -> dict:
    with wsman, WinRS(wsman) as shell:
        proc = Process(shell, "powershell.exe", ["-EncodedCommand", encode_command(deploy_text("Get-HcpDeployment"))])
        proc.begin_invoke()
        proc.send(param_doc({"ScriptDir": "C:\\Other"}), end=True)
        proc.end_invoke()
        assert proc.rc == 0, proc.stderr
        return json.loads(proc.stdout)


def test_pypsrp_kerberos_over_http_with_message_encryption(hosts):
    host, _ = hosts
    wsman = WSMan("localhost", port=host.port, ssl=False, auth="kerberos", encryption="always",
                  negotiate_service="HTTP")
    assert run_deployment_probe(wsman) == {"ok": True, "result": {"Version": None}}
    status = host.status()
    assert status["auth_failures"] == 0, status


def test_pypsrp_kerberos_over_https_with_certificate_validation(hosts):
    _, host = hosts
    wsman = WSMan("localhost", port=host.port, ssl=True, auth="kerberos", cert_validation=host.cert_path,
                  negotiate_service="HTTP")
    assert run_deployment_probe(wsman)["ok"] is True


def test_a_service_principal_the_kdc_does_not_know_fails(hosts):
    host, _ = hosts
    wsman = WSMan("localhost", port=host.port, ssl=False, auth="kerberos", encryption="always",
                  negotiate_service="WSMAN")
    with pytest.raises(Exception) as e:
        run_deployment_probe(wsman)
    assert "not found in Kerberos database" in str(e.value)
