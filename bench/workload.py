"""The benchmark's workload as a table of operations.

Each client keeps pools of the records it made. An operation takes one item from a pool (or
none), makes a request, and on a 2xx puts what it made into another pool; a client picks, by
weight, among the operations whose pool has something. So a chain like register → qualify →
apply → order → deliver → claim → confirm → approve → pay runs as a steady mix once warm.

To add the vouchers operations when that service lands: write a `run(ctx, item)` for each
(returning the response and the item to pass on), append an `Op` to OPERATIONS with the pools
it takes and gives, put one-off set-up (an open programme, agencies) in `setup`, and what must
hold afterwards (no overspend, conservation) in `check`. `ctx` is a `Client`: `ctx.call(method,
path, role, subject, json=...)` routes to whichever service serves the path.
"""
import itertools
from dataclasses import dataclass

from stdnum.cn import uscc


@dataclass
class Op:
    name: str
    weight: float
    takes: str = None        # the pool an item is taken from (None: needs nothing)
    gives: str = None        # the pool the made item goes to on success
    run: object = None       # run(ctx, item) -> (response, new item)


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


OPERATIONS = [
    Op("register", 1.0, takes=None, gives="enterprise", run=register),
    Op("qualify", 1.0, takes="enterprise", gives="qualified", run=qualify),
    # The vouchers chain plugs in here: apply (takes "qualified"), order, deliver, claim, confirm,
    # approve, pay.
]


def setup(ctx):
    """One-off records every client needs (none yet for enterprises)."""
    return {}


def check(ctx, made, databases):
    """What must hold after the run. `made`: operation -> items acknowledged with a 2xx.
    `databases`: service -> its pymongo database. Returns a list of problems."""
    problems = []
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

