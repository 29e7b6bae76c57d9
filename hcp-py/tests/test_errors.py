"""Every HCP error raises its own exception class, with code, field and job id."""

from __future__ import annotations

import pickle

import pytest

import hcp
from conftest import demo_config

KINDS = {
    hcp.NotFound: ("not_found", "NOT_FOUND", LookupError),
    hcp.Conflict: ("conflict", "CONFLICT", None),
    hcp.FeatureNotSupported: ("feature_not_supported", "FEATURE_NOT_SUPPORTED", None),
    hcp.InvalidSpec: ("invalid_spec", "INVALID_SPEC", ValueError),
    hcp.QuotaExceeded: ("quota_exceeded", "QUOTA_EXCEEDED", None),
    hcp.ProviderUnavailable: ("provider_unavailable", "PROVIDER_UNAVAILABLE", ConnectionError),
    hcp.ProviderError: ("provider_error", "PROVIDER_ERROR", None),
    hcp.Timeout: ("timeout", "TIMEOUT", TimeoutError),
    hcp.Cancelled: ("cancelled", "CANCELLED", None),
    hcp.Unauthorized: ("unauthorized", "UNAUTHORIZED", PermissionError),
    hcp.Internal: ("internal", "INTERNAL", None),
}


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_every_class_subclasses_hcp_error_with_its_kind_and_code(cls: type[hcp.HcpError]) -> None:
    kind, code, builtin = KINDS[cls]
    assert issubclass(cls, hcp.HcpError)
    if builtin is not None:
        assert issubclass(cls, builtin)
    e = cls("boom", field="name", job_id="job-1")
    assert (e.kind, e.code, e.field, e.job_id, str(e)) == (kind, code, "name", "job-1", "boom")
    copy = pickle.loads(pickle.dumps(e))
    assert type(copy) is cls and (copy.code, copy.field, copy.job_id, str(copy)) == (code, "name", "job-1", "boom")
    assert issubclass(hcp.JobFailed, hcp.HcpError)


def test_unknown_vm_and_job_raise_not_found(engine: hcp.Engine) -> None:
    with pytest.raises(hcp.NotFound) as e:
        engine.get_vm("demo", "vm-does-not-exist")
    assert e.value.code == "NOT_FOUND" and e.value.kind == "not_found"
    assert "vm-does-not-exist" in str(e.value)
    with pytest.raises(hcp.NotFound):
        engine.get_job("job-does-not-exist")
    with pytest.raises(hcp.NotFound):
        engine.wait_job("job-does-not-exist")
    with pytest.raises(hcp.NotFound):
        engine.job_logs("job-does-not-exist")
    with pytest.raises(hcp.NotFound) as e:
        engine.start_vm("demo", "vm-does-not-exist")
    assert e.value.field == "vm_id" and e.value.operation == "start_vm"


def test_another_projects_vm_is_not_found() -> None:
    config = demo_config()
    config["projects"].append({"name": "other"})
    with hcp.Engine(config) as engine:
        s = engine.create_vm("other", "web-1", "ubuntu-24.04", "small", wait=True)
        with pytest.raises(hcp.NotFound):
            engine.get_vm("demo", s.vm_id)
        with pytest.raises(hcp.NotFound):
            engine.delete_vm("demo", s.vm_id)
        assert engine.list_vms("demo") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "Web_1"}, "name"),
        ({"image": "debian-13"}, "image"),
        ({"flavor": "huge"}, "flavor"),
        ({"zone": "zone-x"}, "zone"),
        ({"image": "windows-2022"}, "disk_gib"),
        ({"tags": {"bad key": "v"}}, "tags.bad key"),
        ({"project": "Demo"}, "project"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"wait": True, "timeout": -1.0}, "timeout"),
    ],
)
def test_invalid_input_raises_invalid_spec_naming_the_field(engine: hcp.Engine, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"project": "demo", "name": "web-1", "image": "ubuntu-24.04", "flavor": "small"}
    args.update(kwargs)
    with pytest.raises(hcp.InvalidSpec) as e:
        engine.create_vm(**args)  # type: ignore[arg-type]
    assert e.value.field == field, str(e.value)
    assert e.value.code == "INVALID_SPEC"
    assert isinstance(e.value, ValueError)
    if field != "timeout":
        assert engine.list_vms("demo") == [], "nothing is half-created"


def test_wait_job_with_a_bad_timeout_names_the_field(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(hcp.InvalidSpec) as e:
            engine.wait_job(s, timeout=bad)
        assert e.value.field == "timeout"


def test_user_data_in_a_zone_without_cloud_init_is_feature_not_supported(engine: hcp.Engine) -> None:
    with pytest.raises(hcp.FeatureNotSupported) as e:
        engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", zone="zone-b", user_data="#cloud-config\n")
    assert e.value.code == "FEATURE_NOT_SUPPORTED"
    assert e.value.context.get("capability") == "cloud_init"
    assert e.value.operation == "create_vm"
    assert "cloud_init" in str(e.value)
    assert engine.list_vms("demo") == []
    # The same request in a zone with cloud-init is fine, and the text never shows.
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", zone="zone-a", user_data="#cloud-config\n", wait=True)
    vm = engine.get_vm("demo", s.vm_id)
    assert vm.has_user_data and "cloud-config" not in repr(vm.to_dict())


def test_a_taken_name_is_a_conflict(engine: hcp.Engine) -> None:
    engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    with pytest.raises(hcp.Conflict) as e:
        engine.create_vm("demo", "web-1", "ubuntu-24.04", "small")
    assert e.value.field == "name" and e.value.code == "CONFLICT"


def test_quota_exceeded() -> None:
    config = demo_config()
    config["projects"][0]["quota"] = {"max_vms": 1}
    with hcp.Engine(config) as engine:
        engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
        with pytest.raises(hcp.QuotaExceeded) as e:
            engine.create_vm("demo", "web-2", "ubuntu-24.04", "small")
        assert e.value.code == "QUOTA_EXCEEDED" and "max_vms" in str(e.value)


def test_unknown_zone_in_capabilities_is_invalid(engine: hcp.Engine) -> None:
    with pytest.raises(hcp.InvalidSpec) as e:
        engine.capabilities("zone-x")
    assert e.value.field == "zone"


def test_a_failed_job_raises_job_failed_with_its_id_and_code() -> None:
    failing = demo_config(engine={"retry": {"max_attempts": 1}}, failure_rate=1.0)
    with hcp.Engine(failing) as engine:
        with pytest.raises(hcp.JobFailed) as e:
            engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
        err = e.value
        assert err.job_id is not None and err.job_id.startswith("job-")
        assert err.code == "PROVIDER_UNAVAILABLE" and err.kind == "provider_unavailable"
        assert err.job is not None and err.job.id == err.job_id and err.job.state == "FAILED"
        assert err.job.error is not None and err.job.error.code == "PROVIDER_UNAVAILABLE"
        assert err.operation == "create_vm"
        assert err.job_id in str(err) and "FAILED" in str(err)
        # wait_job returns the failed job; raise_for_state raises the same way.
        job = engine.wait_job(err.job_id)
        assert job.state == "FAILED"
        with pytest.raises(hcp.JobFailed) as again:
            job.raise_for_state()
        assert again.value.job_id == err.job_id and again.value.code == "PROVIDER_UNAVAILABLE"


def test_a_job_failing_on_a_provider_error_carries_the_provider_code() -> None:
    config = demo_config(engine={"retry": {"max_attempts": 1}}, failure_rate=1.0)
    with hcp.Engine(config) as engine:
        with pytest.raises(hcp.JobFailed) as e:
            engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
        assert e.value.code == "PROVIDER_UNAVAILABLE" and e.value.kind == "provider_unavailable"
        vm = engine.list_vms("demo")[0]
        assert vm.state == "ERROR"
        assert vm.last_error is not None and vm.last_error.code == "PROVIDER_UNAVAILABLE"


def test_wait_job_timeout_raises_timeout_with_the_job_id_and_the_job_goes_on(slow_engine: hcp.Engine) -> None:
    s = slow_engine.create_vm("demo", "slow", "ubuntu-24.04", "small")
    with pytest.raises(hcp.Timeout) as e:
        slow_engine.wait_job(s, timeout=0.2)
    assert e.value.job_id == s.job_id
    assert e.value.code == "TIMEOUT" and isinstance(e.value, TimeoutError)
    assert slow_engine.get_job(s).state in ("PENDING", "RUNNING")

    with pytest.raises(hcp.Timeout) as e:
        slow_engine.create_vm("demo", "slow-2", "ubuntu-24.04", "small", wait=True, timeout=0.1)
    assert e.value.job_id is not None
    assert [vm.name for vm in slow_engine.list_vms("demo")] == ["slow", "slow-2"], "the submission stands"
