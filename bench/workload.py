"""The benchmark's workload as a table of operations.

Each client keeps pools of the records it made. An operation takes one item from a pool (or
none), makes a request, and on a 2xx puts what it made into another pool; a client picks, by
weight, among the operations whose pool has something. So the chain register → qualify →
apply → order → deliver → confirm → claim → approve → pay runs as a steady mix once warm.

To add an operation: write a `run(ctx, item)` (returning the response and the item to pass on),
append an `Op` to OPERATIONS with the pools it takes and gives (weights to favour it), put
one-off set-up in `setup` (its result is `ctx.shared`), and what must hold afterwards in `check`.
`ctx` is a `Client`: `ctx.call(method, path, role, subject, json=...)` routes to whichever
service (instance) serves the path.
"""
import hashlib
import itertools
from dataclasses import dataclass
from datetime import date, timedelta

from stdnum.cn import uscc


@dataclass
class Op:
    name: str
    weight: float
    takes: str = None        # the pool an item is taken from (None: needs nothing)
    gives: str = None        # the pool the made item goes to on success
    run: object = None       # run(ctx, item) -> (response, new item)
    again: tuple = ()        # statuses after which the item goes back to its pool (not ready yet)


_serial = itertools.count(1)


def credit_code(ctx):
    body = f"91350100{ctx.client_id % 1000:03d}{next(_serial) % 10**6:06d}"
    return body + uscc.calc_check_digit(body)


def register(ctx, _):
    code = credit_code(ctx)
    response = ctx.call("POST", "/api/v1/enterprises", "officer", "bench-officer", json={
        "credit_code": code, "name": f"基准测试企业{code[-6:]}", "region": "350102", "industry": "C34",
        "size": "small"})
    return response, code


def qualify(ctx, enterprise_id):
    response = ctx.call("POST", f"/api/v1/enterprises/{enterprise_id}/qualifications", "officer", "bench-officer",
                        json={"tier": "srdi_sme", "level": "provincial", "certificate_no": f"BENCH-{enterprise_id}",
                              "issuing_authority": "福建省工业和信息化厅", "valid_from": "2025-01-01",
                              "valid_to": "2027-12-31"})
    return response, enterprise_id


OFFICER = ("officer", "bench-officer")
FACE_FEN, PRICE_FEN, SUBSIDY_FEN = 2_000_000, 1_000_000, 500_000   # 50 % of the price, under the item cap
EVIDENCE = {"contract_ref": "HT-BENCH", "invoice_no": "INV-BENCH", "payment_proof_ref": "BANK-BENCH",
            "official_no": None, "deliverable_sha256": "ab" * 32}


def apply(ctx, enterprise_id):
    response = ctx.call("POST", "/api/v1/vouchers", "enterprise", enterprise_id,
                        json={"programme_id": ctx.shared["programme_id"]})
    return response, (enterprise_id, response.json().get("voucher_id") if response.ok else None)


def order(ctx, voucher):
    enterprise_id, voucher_id = voucher
    agency_id = ctx.shared["agencies"][ctx.client_id % len(ctx.shared["agencies"])]
    response = ctx.call("POST", "/api/v1/orders", "enterprise", enterprise_id, json={
        "voucher_id": voucher_id, "agency_id": agency_id, "service_code": "PAT-01", "price_fen": PRICE_FEN,
        "deliver_by": (date.today() + timedelta(days=60)).isoformat()})
    return response, (enterprise_id, agency_id, response.json().get("order_id") if response.ok else None)


def deliver(ctx, placed):
    # Evidence of its own per order: one invoice on every claim would be a red flag on each (audit's
    # duplicate_evidence), which is not the load this measures.
    enterprise_id, agency_id, order_id = placed
    evidence = dict(EVIDENCE, invoice_no=f"INV-{order_id}", deliverable_sha256=hashlib.sha256(order_id.encode()).hexdigest())
    return ctx.call("POST", f"/api/v1/orders/{order_id}/deliver", "agency", agency_id, json=evidence), placed


def confirm(ctx, placed):
    enterprise_id, _, order_id = placed
    return ctx.call("POST", f"/api/v1/orders/{order_id}/confirm", "enterprise", enterprise_id), placed


def claim(ctx, placed):
    _, agency_id, order_id = placed
    response = ctx.call("POST", "/api/v1/claims", "agency", agency_id, json={"order_id": order_id})
    return response, response.json().get("claim_id") if response.ok else None


def approve(ctx, claim_id):
    return ctx.call("POST", f"/api/v1/claims/{claim_id}/approve", *OFFICER), claim_id


def pay(ctx, claim_id):
    return ctx.call("POST", f"/api/v1/claims/{claim_id}/pay", *OFFICER, json={"payment_ref": f"PAY-{claim_id}"}), None


# A qualification reaches the vouchers service as an event: until it has, apply is refused (422)
# and the enterprise goes back to its pool to try again.
OPERATIONS = [
    Op("register", 1.0, takes=None, gives="enterprise", run=register),
    Op("qualify", 1.0, takes="enterprise", gives="qualified", run=qualify),
    Op("apply", 1.0, takes="qualified", gives="voucher", run=apply, again=(422,)),
    Op("order", 1.0, takes="voucher", gives="order", run=order),
    Op("deliver", 1.0, takes="order", gives="delivered", run=deliver),
    Op("confirm", 1.0, takes="delivered", gives="confirmed", run=confirm),
    Op("claim", 1.0, takes="confirmed", gives="claim", run=claim),
    Op("approve", 1.0, takes="claim", gives="approved", run=approve),
    Op("pay", 1.0, takes="approved", gives=None, run=pay),
]


def operations(shared):
    """The rows that can run: without an open programme, only the enterprises ones."""
    return OPERATIONS if shared.get("programme_id") else OPERATIONS[:2]


def setup(ctx, services):
    """An open programme and a few agencies, shared by every client; nothing without vouchers."""
    if not {"vouchers", "providers"} <= set(services):
        return {"programme_id": None, "agencies": []}
    today = date.today()
    created = ctx.call("POST", "/api/v1/programmes", *OFFICER, json={
        "name": "基准测试知识产权服务券", "region": "350102", "fund_source": "中小企业发展专项资金",
        "budget_fen": 10**12, "opens_on": (today - timedelta(days=1)).isoformat(),
        "closes_on": (today + timedelta(days=300)).isoformat(), "validity_days": 180,
        "redemption_model": "agency_redeems",
        "tiers": [{"tier": "srdi_sme", "face_value_fen": FACE_FEN, "annual_cap_fen": 5 * FACE_FEN}],
        "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                       "item_cap_fen": PRICE_FEN, "agency_kinds": ["patent"]}]})
    created.raise_for_status()
    pid = created.json()["programme_id"]
    ctx.call("POST", f"/api/v1/programmes/{pid}/open", *OFFICER).raise_for_status()
    agencies = []
    for _ in range(8):
        code = credit_code(ctx)
        ctx.call("POST", "/api/v1/agencies", *OFFICER, json={
            "credit_code": code, "name": "基准专利代理事务所", "kind": "patent", "licence_no": "35101",
            "region": "350102", "service_codes": ["PAT-01"],
            "contact": {"person": "林律师", "phone": "0591-87654321"}}).raise_for_status()
        agencies.append(code)
    return {"programme_id": pid, "agencies": agencies}


def check(ctx, made, databases):
    """What must hold after the run. `made`: operation -> items acknowledged with a 2xx.
    `databases`: service -> its pymongo database. Returns a list of problems."""
    problems = []
    if ctx.shared.get("programme_id"):
        b = ctx.call("GET", f"/api/v1/programmes/{ctx.shared['programme_id']}/balances", *OFFICER).json()
        buckets = b["remaining_fen"] + b["free_fen"] + b["held_fen"] + b["paid_fen"] + b["returned_fen"]
        expected = {"issued": len(made.get("apply", ())) * FACE_FEN,
                    "held": (len(made.get("order", ())) - len(made.get("pay", ()))) * SUBSIDY_FEN,
                    "paid": len(made.get("pay", ())) * SUBSIDY_FEN}
        actual = {"issued": b["budget_fen"] - b["remaining_fen"], "held": b["held_fen"], "paid": b["paid_fen"]}
        if buckets != b["budget_fen"]:
            problems.append(f"conservation broken: budget {b['budget_fen']} != buckets {buckets}")
        if actual != expected:
            problems.append(f"balances {actual} differ from what the acknowledged requests imply {expected}")
    enterprises = databases.get("enterprises")
    if enterprises is not None:
        registered = set(made.get("register", ()))
        stored = {d["_id"] for d in enterprises.enterprises.find({}, {"_id": 1})}
        if registered - stored:
            problems.append(f"{len(registered - stored)} acknowledged registrations are not stored")
        qualified = len(made.get("qualify", ()))
        if enterprises.qualifications.count_documents({}) != qualified:
            problems.append(f"{qualified} qualifications acknowledged, "
                            f"{enterprises.qualifications.count_documents({})} stored")
    return problems


def unprojected(databases):
    """Ledger entries the audit projector has not applied yet (0 without audit)."""
    if "audit" not in databases:
        return 0
    meta = {d["_id"]: d for d in databases["audit"]["ledger_meta"].find({"_id": {"$in": ["head", "projector"]}})}
    return meta.get("head", {}).get("size", 0) - meta.get("projector", {}).get("position", 0)


def pending_outbox(databases):
    """Documents whose events are not published yet, over every service's outbox collections."""
    from ipvkit.deadletters import services
    total = 0
    for name, cls in services().items():
        store = next((v for v in vars(cls).values() if hasattr(v, "outbox_collections")), None)
        if store is not None and name in databases:
            total += sum(databases[name][c].count_documents({"outbox.0": {"$exists": True}})
                         for c in store.outbox_collections)
    return total

