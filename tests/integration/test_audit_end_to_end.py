"""A whole voucher life cycle through the real vouchers service's HTTP API appears in the audit
ledger in order, verifies, and reconciles with the vouchers service's own figures over RPC."""
import eventlet
import pytest
from pymongo import MongoClient

from tests.conftest import free_port
from tests.integration.test_audit_reports import audit  # noqa: F401 - the fixture
from tests.integration.test_vouchers_api import ENT, EVIDENCE, vapi  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

LIFE = ["programme.created", "programme.opened", "voucher.issued", "order.placed", "order.delivered",
        "order.confirmed", "claim.submitted", "claim.approved", "claim.paid"]


def test_a_voucher_life_cycle_is_in_the_ledger_in_order_verified_and_reconciled(vapi, audit, service_config,  # noqa: F811
                                                                               mongo_uri):
    db = service_config["MONGO_DB"] + "_audit"  # the audit service has its own database
    try:
        api = audit(MONGO_DB=db, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
        pid = vapi.world()
        voucher = vapi.voucher(pid)
        order = vapi.order(voucher["voucher_id"], price=1_500_000).json()
        oid = order["order_id"]
        assert vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", json=EVIDENCE).status_code == 200
        assert vapi("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT).status_code == 200
        cid = vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": oid}).json()["claim_id"]
        assert vapi("POST", f"/api/v1/claims/{cid}/approve").status_code == 200
        paid = vapi("POST", f"/api/v1/claims/{cid}/pay", json={"payment_ref": "国库集中支付-0042",
                                                              "paid_on": "2026-06-20"})
        assert paid.status_code == 200, paid.text

        api.wait_projected(len(LIFE))
        entries = api.get("/api/v1/audit/entries").json()["items"]
        assert [e["type"] for e in entries] == LIFE
        assert entries[-1]["event"]["data"]["claim_id"] == cid
        assert api.get("/api/v1/audit/verify").json()["ok"] is True
        checkpoint = api.post("/api/v1/audit/checkpoints").json()
        assert checkpoint["size"] >= len(LIFE)

        reconciled = api.get("/api/v1/audit/reconciliation").json()
        assert reconciled["ok"] is True, reconciled
        paid_report = api.get("/api/v1/audit/reports/fund-use", by="programme").json()["rows"][0]
        assert (paid_report["key"], paid_report["paid_fen"], paid_report["held_fen"]) == (pid, 750_000, 0)
    finally:
        MongoClient(mongo_uri).drop_database(db)
