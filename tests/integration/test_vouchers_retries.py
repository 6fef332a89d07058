"""A request that crashed half way and is sent again with its Idempotency-Key (the key is freed by the
crash, or taken over after a process died) finishes the first run's work instead of doing it twice:
the new voucher's and order's ids come from the key, so the second run finds what the first left."""
import uuid

import pytest

from services.vouchers import service as vouchers_service
from services.vouchers.storage import VoucherRepo
from tests.integration.test_vouchers_api import ENT, EVIDENCE, vapi  # noqa: F401 - the fixture

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


@pytest.mark.parametrize("step", ["deliver", "confirm", "claim", "approve"])
def test_a_step_whose_answer_was_lost_is_answered_on_retry_not_refused(vapi, monkeypatch, event_tap, step):  # noqa: F811
    # The database went away after the step was written (kill -9 of FerretDB did this): a retry under the
    # same key must be told the step happened, not get a 409 for the state its own first run left.
    pid = vapi.world()
    oid = vapi.order(vapi.voucher(pid)["voucher_id"]).json()["order_id"]
    cid = oid.replace("o_", "c_", 1)
    steps = {"deliver": ("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", EVIDENCE, "order.delivered"),
             "confirm": ("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT, None, "order.confirmed"),
             "claim": ("POST", "/api/v1/claims", "agency", "ag-1", {"order_id": oid}, "claim.submitted"),
             "approve": ("POST", f"/api/v1/claims/{cid}/approve", "officer", "o1", None, "claim.approved")}
    for name, (method, path, role, subject, body, _) in steps.items():
        if name == step:
            break
        assert vapi(method, path, role, subject, json=body).status_code in (200, 201)
    method, path, role, subject, body, event_type = steps[step]
    tap = event_tap("vouchers", event_type)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    view = "claim_view" if step in ("claim", "approve") else "order_view"
    crash_once(monkeypatch, vouchers_service, view)   # the step is stored, the answer is lost
    assert vapi(method, path, role, subject, json=body, headers=dict(key)).status_code == 500
    retried = vapi(method, path, role, subject, json=body, headers=dict(key))
    assert retried.status_code in (200, 201), retried.text
    assert [e["type"] for e in tap.take(1)] == [event_type]                           # the step happened once
    assert vapi(method, path, role, subject, json=body).status_code == 409            # another request is refused
