"""Every illegal transition of every state machine is a 409 naming the current state, and
changes nothing."""
import pytest

from tests.integration.test_vouchers_api import ENT, EVIDENCE, PROGRAMME, vapi  # noqa: F401

pytestmark = pytest.mark.integration

ORDER_ALLOWED = {("placed", "cancel"), ("placed", "deliver"), ("delivered", "confirm"), ("delivered", "dispute"),
                 ("disputed", "resolve"), ("confirmed", "claim")}
ORDER_ACTIONS = ("cancel", "deliver", "confirm", "dispute", "resolve", "claim")
CLAIM_ALLOWED = {("submitted", "approve"), ("submitted", "reject"), ("approved", "pay")}


def order_action(vapi, oid, action):
    return {
        "cancel": lambda: vapi("POST", f"/api/v1/orders/{oid}/cancel", "enterprise", ENT, json={"reason": "不需要了"}),
        "deliver": lambda: vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", json=EVIDENCE),
        "confirm": lambda: vapi("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT),
        "dispute": lambda: vapi("POST", f"/api/v1/orders/{oid}/dispute", "enterprise", ENT, json={"reason": "质量差"}),
        "resolve": lambda: vapi("POST", f"/api/v1/orders/{oid}/resolve", json={"upheld": True, "resolution": "退回"}),
        "claim": lambda: vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": oid}),
    }[action]()


def claim_action(vapi, cid, action):
    body = {"approve": None, "reject": {"reason": "发票不符"}, "pay": {"payment_ref": "P-1"}}[action]
    return vapi("POST", f"/api/v1/claims/{cid}/{action}", json=body)


def test_every_illegal_order_and_claim_transition_is_409(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    paths = {"placed": [], "delivered": ["deliver"], "confirmed": ["deliver", "confirm"],
             "disputed": ["deliver", "dispute"], "cancelled": ["cancel"], "released": ["deliver", "dispute", "resolve"],
             "submitted": ["deliver", "confirm", "claim"], "approved": ["deliver", "confirm", "claim", "approve"],
             "rejected": ["deliver", "confirm", "claim", "reject"], "paid": ["deliver", "confirm", "claim", "approve", "pay"]}
    orders = {}
    for name, steps in paths.items():
        oid = vapi.order(vid, price=100_000).json()["order_id"]
        for step in steps:
            done = (order_action(vapi, oid, step) if step in ORDER_ACTIONS else claim_action(vapi, "c_" + oid[2:], step))
            assert done.status_code in (200, 201), (name, step, done.text)
        orders[name] = oid
    before = vapi("GET", f"/api/v1/vouchers/{vid}", "enterprise", ENT).json()

    refused = 0
    for name, oid in orders.items():
        state = vapi("GET", f"/api/v1/orders/{oid}", "auditor", "a1").json()["state"]
        for action in ORDER_ACTIONS:
            if (state, action) in ORDER_ALLOWED:
                continue
            response = order_action(vapi, oid, action)
            assert response.status_code == 409, (name, action, response.text)
            assert response.json()["state"] == state and response.json()["error"] == "illegal_transition"
            refused += 1
        if state == "claimed":
            for action in ("approve", "reject", "pay"):
                if (name, action) in CLAIM_ALLOWED:
                    continue
                response = claim_action(vapi, "c_" + oid[2:], action)
                assert response.status_code == 409 and response.json()["state"] == name, (name, action, response.text)
                refused += 1
    assert refused == 6 * 6 + 4 + 4 + 5 + 5 + 9         # 6 orders at an end, 4 with exits; then the claims
    assert vapi("GET", f"/api/v1/vouchers/{vid}", "enterprise", ENT).json() == before     # nothing moved
    assert vapi("POST", "/api/v1/claims/c_nope_1/approve").status_code == 404


def test_every_illegal_programme_and_voucher_transition_is_409(vapi):
    draft = vapi("POST", "/api/v1/programmes", json=PROGRAMME).json()["programme_id"]
    assert vapi("POST", f"/api/v1/programmes/{draft}/close").json()["state"] == "draft"
    opened = vapi.world()
    assert vapi("POST", f"/api/v1/programmes/{opened}/open").json()["state"] == "open"
    vid = vapi.voucher(opened)["voucher_id"]
    assert vapi("POST", f"/api/v1/programmes/{opened}/close").status_code == 200
    for method, path, body in (("POST", f"/api/v1/programmes/{opened}/open", None),
                               ("POST", f"/api/v1/programmes/{opened}/close", None),
                               ("PUT", f"/api/v1/programmes/{opened}", PROGRAMME)):
        response = vapi(method, path, json=body)
        assert response.status_code == 409 and response.json()["state"] == "closed", path
    assert vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": opened}).json()["state"] == "closed"
    assert vapi.order(vid).status_code == 201                         # a closed programme's vouchers run on
    assert vapi("POST", f"/api/v1/vouchers/{vid}/revoke", json={"reason": "虚假材料"}).json()["status"] == "revoked"
    again = vapi("POST", f"/api/v1/vouchers/{vid}/revoke", json={"reason": "again"})
    assert again.status_code == 409 and again.json()["state"] == "revoked"
    assert vapi.order(vid).json()["state"] == "revoked"
