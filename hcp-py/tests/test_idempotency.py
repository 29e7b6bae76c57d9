"""Idempotency keys: the same request replays the first answer; a different one is refused."""

from __future__ import annotations

import pytest

import hcp


def test_create_with_the_same_key_replays_the_first_answer(engine: hcp.Engine) -> None:
    first = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", idempotency_key="k-1", wait=True)
    again = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", idempotency_key="k-1")
    assert again.replayed is True and first.replayed is False
    assert (again.vm_id, again.job_id) == (first.vm_id, first.job_id)
    assert [vm.id for vm in engine.list_vms("demo")] == [first.vm_id], "no second VM"


def test_the_same_key_with_a_different_request_is_refused(engine: hcp.Engine) -> None:
    engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", idempotency_key="k-1", wait=True)
    with pytest.raises(hcp.Conflict) as e:
        engine.create_vm("demo", "web-2", "ubuntu-24.04", "small", idempotency_key="k-1")
    assert e.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert e.value.field == "idempotency_key"
    assert len(engine.list_vms("demo")) == 1


def test_vm_changes_replay_too(engine: hcp.Engine) -> None:
    s = engine.create_vm("demo", "web-1", "ubuntu-24.04", "small", wait=True)
    stop = engine.stop_vm("demo", s.vm_id, idempotency_key="stop-1", wait=True)
    replay = engine.stop_vm("demo", s.vm_id, idempotency_key="stop-1", wait=True)
    assert replay.replayed and replay.job_id == stop.job_id
    assert replay.job is not None and replay.job.state == "SUCCEEDED"
