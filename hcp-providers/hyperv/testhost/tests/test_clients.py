"""Independent WinRM clients hold the test host honest: pywinrm and pypsrp run HCP's scripts
against it over HTTP with NTLM message sealing, over HTTPS with Basic and certificate
verification, and see WS-Man faults in Windows' format."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import winrm
from pypsrp.shell import Process, SignalCode, WinRS
from pypsrp.wsman import WSMan
from winrm.protocol import Protocol

import hcp_winrm_testhost
from conftest import PASSWORD, USER, control, deploy, deploy_text, encode_command, param_doc, script_text, SCRIPT_DIR


@pytest.fixture(scope="module")
def hosts():
    plain, s1 = hcp_winrm_testhost.start(1, USER, PASSWORD, copy_seconds=0.05)
    tls, s2 = hcp_winrm_testhost.start(1, USER, PASSWORD, copy_seconds=0.05, tls=True)
    yield plain[0], tls[0]
    for s in s1 + s2:
        s.shutdown()


def pywinrm_protocol(host, transport="ntlm", password=PASSWORD, tls=False):
    scheme = "https" if tls else "http"
    kwargs = {"server_cert_validation": "validate", "ca_trust_path": host.cert_path} if tls else {}
    return Protocol(f"{scheme}://127.0.0.1:{host.port}/wsman", transport=transport, username=USER,
                    password=password, message_encryption="auto", **kwargs)


def pywinrm_run(p: Protocol, text: str, params: dict):
    shell = p.open_shell()
    try:
        cmd = p.run_command(shell, "powershell.exe", ["-NoProfile", "-NonInteractive", "-EncodedCommand", encode_command(text)])
        p.send_command_input(shell, cmd, param_doc(params), end=True)
        out, err, code = p.get_command_output(shell, cmd)
        p.cleanup_command(shell, cmd)
    finally:
        p.close_shell(shell)
    return json.loads(out), err, code


def test_pywinrm_ntlm_sealed_deploys_and_creates_a_vm(hosts):
    host, _ = hosts
    p = pywinrm_protocol(host)

    def run(text, params):
        doc, _, code = pywinrm_run(p, text, params)
        assert doc["ok"] and code == 0, doc
        return doc["result"]

    assert run(deploy_text("Get-HcpDeployment"), {"ScriptDir": SCRIPT_DIR}) == {"Version": None}
    version = deploy(run)
    assert run(deploy_text("Get-HcpDeployment"), {"ScriptDir": SCRIPT_DIR}) == {"Version": version}
    vm_id = "vm-" + uuid.uuid4().hex
    created = run(script_text(f"{SCRIPT_DIR}\\{version}\\New-HcpVm.ps1"), {
        "VmId": vm_id, "Name": "py-vm", "Image": "ubuntu-24.04",
        "TemplatePath": "C:\\HCP\\Templates\\ubuntu-24.04.vhdx", "VhdDir": "C:\\HCP\\VMs",
        "DiskMode": "copy", "DiskGiB": 10, "Generation": 2, "Vcpus": 2, "MemoryMiB": 2048,
        "Networks": [{"SwitchName": "LAN", "VlanId": 42}, {"SwitchName": "LAN", "VlanId": 0}], "Notes": json.dumps({"hcp": {"vm_id": vm_id, "project": "py"}}),
        "Kvp": {"HcpVmId": vm_id}, "UserData": "#cloud-config\n", "Start": True,
    })
    assert created["State"] == "Running" and created["Existing"] is False
    vm = control(host, "state")["vms"][created["Id"]]
    assert vm["adapters"] == [{"Name": "Network Adapter", "SwitchName": "LAN", "VlanId": 42},
                             {"Name": "Network Adapter 2", "SwitchName": "LAN", "VlanId": 0}]
    assert vm["kvp"] == {"HcpVmId": vm_id} and vm["processor_count"] == 2
    again = run(script_text(f"{SCRIPT_DIR}\\{version}\\New-HcpVm.ps1"), {
        "VmId": vm_id, "Name": "py-vm", "Image": "ubuntu-24.04",
        "TemplatePath": "C:\\HCP\\Templates\\ubuntu-24.04.vhdx", "VhdDir": "C:\\HCP\\VMs",
        "DiskMode": "copy", "DiskGiB": 10, "Generation": 2, "Vcpus": 2, "MemoryMiB": 2048,
        "Notes": "{}", "Start": True,
    })
    assert again == {"Id": created["Id"], "State": "Running", "Existing": True, "OwnerNode": "hv1"}


def test_parameters_are_bound_like_powershell(hosts):
    host, _ = hosts
    p = pywinrm_protocol(host)
    doc, _, code = pywinrm_run(p, deploy_text("Get-HcpDeployment"), {"ScriptDir": SCRIPT_DIR, "Evil": "x"})
    assert code == 1 and doc["error"]["Category"] == "InvalidArgument"
    assert "A parameter cannot be found that matches parameter name 'Evil'" in doc["error"]["Message"]
    doc, _, code = pywinrm_run(p, deploy_text("Get-HcpDeployment"), {})
    assert "missing mandatory parameters: ScriptDir" in doc["error"]["Message"]


def test_large_output_arrives_in_several_receive_chunks(hosts):
    host, _ = hosts
    for i in range(40):
        control(host, "vm", {"name": f"seeded-{i:02d}-" + "n" * 60})
    p = pywinrm_protocol(host)

    def run(text, params):
        doc, _, code = pywinrm_run(p, text, params)
        assert doc["ok"], doc
        return doc["result"]

    version = deploy(run)
    shell = p.open_shell()
    cmd = p.run_command(shell, "powershell.exe", ["-EncodedCommand", encode_command(script_text(f"{SCRIPT_DIR}\\{version}\\Get-HcpInventory.ps1"))])
    p.send_command_input(shell, cmd, param_doc({"TemplateDir": "C:\\HCP\\Templates"}), end=True)
    chunks = []
    done = False
    while not done:
        out, _err, _code, done = p._raw_get_command_output(shell, cmd)
        if out:
            chunks.append(out)
    p.cleanup_command(shell, cmd)
    p.close_shell(shell)
    assert len(chunks) >= 2, "the output came in several Receive responses"
    doc = json.loads(b"".join(chunks))
    assert len(doc["result"]["Vms"]) >= 40 and doc["result"]["Images"] == ["ubuntu-24.04", "windows-2022"]


def test_pywinrm_basic_over_https_verifies_the_certificate(hosts):
    _, host = hosts
    p = pywinrm_protocol(host, transport="basic", tls=True)
    doc, _, code = pywinrm_run(p, deploy_text("Get-HcpDeployment"), {"ScriptDir": SCRIPT_DIR})
    assert code == 0 and doc == {"ok": True, "result": {"Version": None}}


@pytest.mark.parametrize("transport", ["ntlm", "basic"])
def test_wrong_password_is_refused(hosts, transport):
    plain, tls = hosts
    host = tls if transport == "basic" else plain
    p = pywinrm_protocol(host, transport=transport, password="wrong", tls=transport == "basic")
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        p.open_shell()


def test_unknown_scripts_are_refused_and_faults_are_wsman_faults(hosts):
    host, _ = hosts
    s = winrm.Session(f"http://127.0.0.1:{host.port}/wsman", auth=(USER, PASSWORD), transport="ntlm")
    r = s.run_ps("Get-Process | Stop-Process")
    assert r.status_code == 1 and b"refuses" in r.std_err
    p = pywinrm_protocol(host)
    with pytest.raises(winrm.exceptions.WSManFaultError) as e:
        p.run_command(str(uuid.uuid4()).upper(), "powershell.exe", ["-EncodedCommand", "AA=="])
    assert e.value.wsman_fault_code == 2150858843 and "shell was not found" in e.value.reason


def test_the_shell_quota_is_a_quota_limit_fault(hosts):
    host, _ = hosts
    p = pywinrm_protocol(host)
    shells = [p.open_shell() for _ in range(5)]
    try:
        with pytest.raises(winrm.exceptions.WSManFaultError) as e:
            p.open_shell()
        assert e.value.wsman_fault_code == 2150859174 and "maximum number of 5 concurrent shells" in e.value.reason
    finally:
        for sh in shells:
            p.close_shell(sh)


def test_pypsrp_runs_a_script_over_sealed_ntlm_and_terminates_a_hung_one(hosts):
    host, _ = hosts
    wsman = WSMan("127.0.0.1", port=host.port, ssl=False, auth="ntlm", encryption="always",
                  username=USER, password=PASSWORD)
    with wsman, WinRS(wsman) as shell:
        proc = Process(shell, "powershell.exe", ["-EncodedCommand", encode_command(deploy_text("Get-HcpDeployment"))])
        proc.begin_invoke()
        proc.send(param_doc({"ScriptDir": "C:\\Other"}), end=True)
        proc.end_invoke()
        assert proc.rc == 0 and json.loads(proc.stdout) == {"ok": True, "result": {"Version": None}}

        control(host, "faults", {"hang:Get-HcpDeployment": 1})
        proc = Process(shell, "powershell.exe", ["-EncodedCommand", encode_command(deploy_text("Get-HcpDeployment"))])
        proc.begin_invoke()
        proc.send(param_doc({"ScriptDir": "C:\\Other"}), end=True)
        for _ in range(100):
            if any(r.get("hung") for r in control(host, "records")["records"]):
                break
            time.sleep(0.05)
        proc.signal(SignalCode.TERMINATE)
    records = control(host, "records")
    hung = [r for r in records["records"] if r.get("hung")]
    assert hung and hung[-1]["terminated"] is True
    assert records["violations"] == []


def test_pypsrp_negotiate_over_https_with_certificate_validation(hosts):
    _, host = hosts
    wsman = WSMan("127.0.0.1", port=host.port, ssl=True, auth="negotiate", cert_validation=host.cert_path,
                  username=USER, password=PASSWORD)
    with wsman, WinRS(wsman) as shell:
        proc = Process(shell, "powershell.exe", ["-EncodedCommand", encode_command(deploy_text("Get-HcpDeployment"))])
        proc.begin_invoke()
        proc.send(param_doc({"ScriptDir": SCRIPT_DIR}), end=True)
        proc.end_invoke()
        assert proc.rc == 0 and json.loads(proc.stdout)["ok"] is True


def test_pypsrp_checkpoints_behave_like_hyper_v(hosts):
    """The checkpoint scripts through pypsrp (sealed NTLM): Production checkpoints hold no memory
    and restore to Off, Standard ones of a running VM hold memory and come back Running, a name
    Hyper-V let repeat is refused, a missing checkpoint is ObjectNotFound, a delete of one that is
    gone says so."""
    host, _ = hosts
    wsman = WSMan("127.0.0.1", port=host.port, ssl=False, auth="ntlm", encryption="always",
                  username=USER, password=PASSWORD)
    with wsman, WinRS(wsman) as shell:
        def call(text, params):
            proc = Process(shell, "powershell.exe", ["-NoProfile", "-NonInteractive", "-EncodedCommand", encode_command(text)])
            proc.begin_invoke()
            proc.send(param_doc(params), end=True)
            proc.end_invoke()
            return json.loads(proc.stdout), proc.rc

        def run(text, params):
            doc, rc = call(text, params)
            assert doc["ok"] and rc == 0, doc
            return doc["result"]

        version = deploy(run)

        def script(name):
            return script_text(f"{SCRIPT_DIR}\\{version}\\{name}.ps1")

        vm_id = "vm-" + uuid.uuid4().hex
        created = run(script("New-HcpVm"), {
            "VmId": vm_id, "Name": "cp-vm", "Image": "ubuntu-24.04",
            "TemplatePath": "C:\\HCP\\Templates\\ubuntu-24.04.vhdx", "VhdDir": "C:\\HCP\\VMs",
            "DiskMode": "differencing", "DiskGiB": 10, "Generation": 2, "Vcpus": 1, "MemoryMiB": 512,
            "Notes": json.dumps({"hcp": {"vm_id": vm_id, "project": "py"}}), "Start": True,
        })
        target = {"VmId": vm_id, "NativeId": created["Id"]}
        assert run(script("Get-HcpCheckpoint"), target) == {"Checkpoints": []}
        run(script("New-HcpCheckpoint"), {**target, "CheckpointName": "prod"})
        control(host, "checkpoint_type", {"vm_id": created["Id"], "type": "Standard"})
        run(script("New-HcpCheckpoint"), {**target, "CheckpointName": "std"})
        listed = run(script("Get-HcpCheckpoint"), target)["Checkpoints"]
        assert [(c["Name"], c["State"], c["Memory"]) for c in listed] == [("prod", "Off", False), ("std", "Running", True)]
        assert listed[0]["CreationTime"] < listed[1]["CreationTime"] and listed[0]["CreationTime"].endswith("Z")

        assert run(script("Restore-HcpCheckpoint"), {**target, "CheckpointName": "prod"}) == {"MemoryKept": False, "State": "Off"}
        assert run(script("Restore-HcpCheckpoint"), {**target, "CheckpointName": "std"}) == {"MemoryKept": True, "State": "Running"}

        doc, rc = call(script("Restore-HcpCheckpoint"), {**target, "CheckpointName": "nope"})
        assert rc == 1 and doc["error"]["Category"] == "ObjectNotFound" and "'nope'" in doc["error"]["Message"]
        doc, rc = call(script("Restore-HcpCheckpoint"), {**target, "CheckpointName": "x'; Remove-VM *"})
        assert rc == 1 and doc["error"]["Category"] == "InvalidArgument"

        control(host, "checkpoint", {"vm_id": created["Id"], "name": "std"})
        doc, rc = call(script("Remove-HcpCheckpoint"), {**target, "CheckpointName": "std"})
        assert rc == 1 and doc["error"]["Category"] == "InvalidOperation" and "unique per VM" in doc["error"]["Message"]
        doc, rc = call(script("New-HcpCheckpoint"), {**target, "CheckpointName": "std"})
        assert rc == 1 and doc["error"]["Category"] in ("ResourceExists", "InvalidOperation")

        assert run(script("Remove-HcpCheckpoint"), {**target, "CheckpointName": "prod"}) == {"Existed": True}
        assert run(script("Remove-HcpCheckpoint"), {**target, "CheckpointName": "prod"}) == {"Existed": False}
        assert [c["Name"] for c in run(script("Get-HcpCheckpoint"), target)["Checkpoints"]] == ["std", "std"]
    assert control(host, "records")["violations"] == []


def test_pywinrm_resizes_like_hyper_v(hosts):
    """Resize-HcpVm.ps1 through pywinrm (sealed NTLM): processor count and memory change while
    the VM is off and are refused (InvalidOperation) while it runs, changing nothing; the VHDX
    grows live on a generation 2 VM and never shrinks; ValidateRange bounds the processor count."""
    host, _ = hosts
    p = pywinrm_protocol(host)

    def call(text, params):
        doc, _, code = pywinrm_run(p, text, params)
        return doc, code

    def run(text, params):
        doc, code = call(text, params)
        assert doc["ok"] and code == 0, doc
        return doc["result"]

    version = deploy(run)
    resize = script_text(f"{SCRIPT_DIR}\\{version}\\Resize-HcpVm.ps1")
    vm_id = "vm-" + uuid.uuid4().hex
    created = run(script_text(f"{SCRIPT_DIR}\\{version}\\New-HcpVm.ps1"), {
        "VmId": vm_id, "Name": "rs-vm", "Image": "ubuntu-24.04",
        "TemplatePath": "C:\\HCP\\Templates\\ubuntu-24.04.vhdx", "VhdDir": "C:\\HCP\\VMs",
        "DiskMode": "differencing", "DiskGiB": 10, "Generation": 2, "Vcpus": 1, "MemoryMiB": 512,
        "Notes": json.dumps({"hcp": {"vm_id": vm_id, "project": "py"}}), "Start": False,
    })
    target = {"VmId": vm_id, "NativeId": created["Id"]}
    done = run(resize, {**target, "Vcpus": 2, "MemoryMiB": 1024, "DiskGiB": 12})
    assert done["Changed"] == ["Vcpus", "MemoryMiB", "DiskGiB"] and done["State"] == "Off"
    assert (done["Vm"]["ProcessorCount"], done["Vm"]["MemoryStartupMiB"], done["Vm"]["DiskGiB"]) == (2, 1024, 12)

    control(host, "power", {"vm_id": created["Id"], "state": "Running"})
    doc, code = call(resize, {**target, "Vcpus": 4, "DiskGiB": 20})
    assert code == 1 and doc["error"]["Category"] == "InvalidOperation", doc
    assert "only while it is off" in doc["error"]["Message"]
    doc, code = call(resize, {**target, "MemoryMiB": 2048})
    assert code == 1 and doc["error"]["FullyQualifiedErrorId"].startswith("MemoryNeedsOff"), doc
    grown = run(resize, {**target, "Vcpus": 2, "DiskGiB": 20})
    assert grown["Changed"] == ["DiskGiB"] and grown["State"] == "Running"
    assert (grown["Vm"]["ProcessorCount"], grown["Vm"]["MemoryStartupMiB"], grown["Vm"]["DiskGiB"]) == (2, 1024, 20)

    doc, code = call(resize, {**target, "DiskGiB": 19})
    assert code == 1 and doc["error"]["Category"] == "InvalidArgument" and "never shrinks" in doc["error"]["Message"]
    doc, code = call(resize, {**target, "Vcpus": 241})
    assert code == 1 and "Cannot validate argument on parameter 'Vcpus'" in doc["error"]["Message"], doc
    assert control(host, "records")["violations"] == []
