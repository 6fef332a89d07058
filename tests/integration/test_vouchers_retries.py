"""A request that crashed half way and is sent again with its Idempotency-Key (the key is freed by the
crash, or taken over after a process died) finishes the first run's work instead of doing it twice:
the new voucher's and order's ids come from the key, so the second run finds what the first left."""
import uuid

import pytest

from services.vouchers import service as vouchers_service
from services.vouchers.storage import VoucherRepo
from tests.integration.test_vouchers_api import ENT, vapi  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def crash_once(monkeypatch, owner, name):
    real = getattr(owner, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"process died in {name}")
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, crashing)


def apply(vapi, pid, key):  # noqa: F811
    return vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": pid},
                headers={"Idempotency-Key": key})


def balances(vapi, pid):  # noqa: F811
    return vapi("GET", f"/api/v1/programmes/{pid}/balances").json()


@pytest.mark.parametrize("crash_in", [(vouchers_service.VouchersService, "_complete_issue"),  # after the reservation
                                      (VoucherRepo, "settle_reservation")])               # after the voucher
def test_an_application_retried_after_a_crash_issues_one_voucher(vapi, monkeypatch, crash_in):  # noqa: F811
    pid = vapi.world()
    key = uuid.uuid4().hex
    crash_once(monkeypatch, *crash_in)
    assert apply(vapi, pid, key).status_code == 500
    retried = apply(vapi, pid, key)
    assert retried.status_code == 201, retried.text
    mine = vapi("GET", "/api/v1/vouchers", "enterprise", ENT).json()["items"]
    assert [v["voucher_id"] for v in mine] == [retried.json()["voucher_id"]]
    money = balances(vapi, pid)
    assert money["free_fen"] == mine[0]["face_value_fen"]
    assert money["budget_fen"] == money["remaining_fen"] + money["free_fen"]
    assert apply(vapi, pid, key).json() == retried.json()   # and the key now replays it


def test_an_order_retried_after_a_crash_holds_the_subsidy_once(vapi, monkeypatch):  # noqa: F811
    pid = vapi.world()
    voucher = vapi.voucher(pid)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    crash_once(monkeypatch, vouchers_service, "order_view")   # the order is stored, the answer is lost
    assert vapi.order(voucher["voucher_id"], headers=dict(key)).status_code == 500
    retried = vapi.order(voucher["voucher_id"], headers=dict(key))
    assert retried.status_code == 201, retried.text
    after = vapi("GET", f"/api/v1/vouchers/{voucher['voucher_id']}", "enterprise", ENT).json()
    assert after["held_fen"] == retried.json()["subsidy_fen"]
    assert after["free_fen"] == voucher["face_value_fen"] - retried.json()["subsidy_fen"]
