"""The money path under faults: while clients walk enterprises through apply, order, deliver,
confirm, claim, approve and pay over HTTP, kill -9 the vouchers service, restart RabbitMQ, crash
FerretDB. Afterwards every acknowledged step is stored, nothing happened twice, the programme
conserves its budget (HTTP and RPC agree) with issued/held/paid exactly what the stored steps
imply, every event the vouchers service published is in the audit ledger once, the ledger
verifies, and nothing was dead-lettered. One private stack (tests/faults/harness.py) per module;
the vouchers read models are fed by publishing the agreed enterprise and provider events."""
import json
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from itertools import count

import pytest
import requests
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from pymongo import MongoClient

from ipvkit.amqp import events_exchange
from ipvkit.deadletters import consumers, queue_depth, services
from ipvkit.events import new_event
from ipvkit.storage import LEASE
from tests.faults.harness import MoneyWorkload, PrivateStack, ServiceProcess, Tap, wait_until
from tests.faults.money_workload import PRICE_FEN
from tests.hostile.profiles import credit_code

pytestmark = pytest.mark.integration

FACE_FEN, SUBSIDY_FEN, CLIENTS, PER_CLIENT = 2_000_000, PRICE_FEN // 2, 4, 40
# Each test runs until this many chains are paid, this many of them begun on the recovered stack: a slow
# machine takes longer, it does not fail (the waits fail only when nothing moves for minutes).
PAID_CHAINS, PAID_AFTER_RECOVERY = 5, 2
# (step, order state, claim state) after each step of the chain, in order.
LADDER = [("apply", None, None), ("order", "placed", None), ("deliver", "delivered", None),
          ("confirm", "confirmed", None), ("claim", "claimed", "submitted"), ("approve", "claimed", "approved"),
          ("pay", "claimed", "paid")]
AGENCIES = ["ag-fault-1", "ag-fault-2", "ag-fault-3"]


def _event(type_, producer, aggregate_id, data):
    return new_event(type=type_, producer=producer, aggregate_id=aggregate_id, sequence=1, data=data,
                     actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc))


def _publish(amqp_uri, producer, events):
    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        publisher = conn.Producer()
        for event in events:
            publisher.publish(json.dumps(event), exchange=events_exchange(producer), routing_key=event["type"],
                              delivery_mode=2, content_type="application/json",
                              declare=[events_exchange(producer)])


class Money:
    """The module's stack: audit, a tap on vouchers.events, vouchers, an open programme, agencies
    and qualified enterprises (three slices, one per test)."""

    def __init__(self, nodes=1, per_client=PER_CLIENT):
        self.stack = PrivateStack.start(nodes)
        # The audit queue and the tap exist before the vouchers service publishes anything.
        self.audit = ServiceProcess(self.stack, "audit",
                                    env={"AUDIT_SIGNING_KEY": str(self.stack.var / "audit_key.pem")}).start()
        self.tap, self.tapped = Tap(self.stack.amqp_uri, "vouchers"), []
        self.vouchers = ServiceProcess(self.stack, "vouchers").start()
        self.db = MongoClient(self.stack.mongo_uri)[self.vouchers.db]
        self.officer = {"Authorization": "Bearer " + self.vouchers.signer.token("officer", "faults")}
        self.slices = count()
        self.enterprises = [[[credit_code() for _ in range(per_client)] for _ in range(CLIENTS)] for _ in range(3)]
        today = date.today()
        _publish(self.stack.amqp_uri, "providers", [_event("provider.registered", "providers", agency, {
            "agency_id": agency, "name": "闽江专利代理事务所", "credit_code": credit_code(), "kind": "patent",
            "region": "350102", "service_codes": ["PAT-01"], "related_credit_codes": [], "eligibility_line": "B",
            "level": "A", "eligible": True}) for agency in AGENCIES])
        everyone = [code for part in self.enterprises for mine in part for code in mine]
        _publish(self.stack.amqp_uri, "enterprises", [_event(
            "enterprise.qualification_granted", "enterprises", "q-" + code, {
                "qualification_id": "q-" + code, "enterprise_id": code, "tier": "srdi_sme", "level": "provincial",
                "certificate_no": "C-" + code, "issuing_authority": "福建省工业和信息化厅", "valid_from": "2025-01-01",
                "valid_to": (today + timedelta(days=700)).isoformat()}) for code in everyone])
        created = self.post("/api/v1/programmes", {
            "name": "福州市知识产权服务券（故障演练）", "region": "350102", "fund_source": "中小企业发展专项资金",
            "budget_fen": 10**11, "opens_on": (today - timedelta(days=1)).isoformat(),
            "closes_on": (today + timedelta(days=300)).isoformat(), "validity_days": 180,
            "redemption_model": "agency_redeems",
            "tiers": [{"tier": "srdi_sme", "face_value_fen": FACE_FEN, "annual_cap_fen": 2 * FACE_FEN}],
            "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                           "item_cap_fen": PRICE_FEN, "agency_kinds": ["patent"]}]})
        self.programme_id = created["programme_id"]
        self.post(f"/api/v1/programmes/{self.programme_id}/open", None)
        wait_until("read models fed", lambda: self.db.qualifications.count_documents({}) == len(everyone)
                   and self.db.agencies.count_documents({}) == len(AGENCIES), 300)

    def post(self, path, body):
        response = requests.post(self.vouchers.base + path, json=body, headers=self.officer, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def plan(self):
        return {"programme_id": self.programme_id, "agencies": AGENCIES,
                "enterprises": self.enterprises[next(self.slices)]}

    def stop(self):
        for service in (self.vouchers, self.audit):
            service.stop()
        self.stack.stop()


@pytest.fixture(scope="module")
def money():
    money = Money()
    yield money
    money.stop()


def acknowledged(outcomes):
    return [r for r in outcomes if r["status"] in (200, 201)]


def chains_paid(recovered):
    def enough(outcomes):
        paid = {r["enterprise"] for r in acknowledged(outcomes) if r["op"] == "pay"}
        begun_after = {r["enterprise"] for r in outcomes if r["op"] == "apply" and r["issued"] > recovered}
        return len(paid) >= PAID_CHAINS and len(paid & begun_after) >= PAID_AFTER_RECOVERY
    return enough


def run_with_fault(money, fault):
    work = MoneyWorkload(money.vouchers, money.plan())
    work.wait_for("money moving before the fault (3 steps acknowledged)", lambda o: len(acknowledged(o)) >= 3)
    started = time.time()
    fault()
    recovered = time.time()
    work.wait_for_success_after(recovered)
    served = time.time()
    work.wait_for(f"{PAID_CHAINS} chains paid, {PAID_AFTER_RECOVERY} of them begun after the recovery",
                  chains_paid(recovered))
    results = work.results()
    figures = check(money, results, recovered)
    figures.update(fault_s=round(recovered - started, 1), serving_again_s=round(served - recovered, 1))
    print("figures:", figures)
    return figures


def check(money, results, recovered):
    problems, settle_started = [], time.monotonic()
    # A reservation a failed apply left is finished by the 10 s sweep once 30 s old. An outbox
    # whose write lost its answer (the database died) is found only by the relay's scan, once per
    # 30 s lease, after that write's own lease ran out: up to two leases.
    wait_until("no reservation pending", lambda: not any(p.get("pending") for p in money.db.programmes.find()), 120)
    pending_s = time.monotonic() - settle_started
    wait_until("outboxes empty", lambda: not any(
        money.db[c].count_documents({"outbox.0": {"$exists": True}}) for c in ("vouchers", "programmes")),
        2 * LEASE.total_seconds() + 10)
    vouchers = list(money.db.vouchers.find({"programme_id": money.programme_id}))
    problems += chain_problems(results, vouchers)
    problems += balance_problems(money, vouchers)
    settled_s = time.monotonic() - settle_started
    ledger_figures = ledger_problems(money, vouchers, problems)
    with Connection(money.stack.amqp_uri) as conn:
        dead = {q: queue_depth(conn, q + ".dlq") for q, name, _, _ in consumers(services())
                if name in ("vouchers", "audit")}
    if any(dead.values()):
        problems.append(f"dead-lettered: {dead}")
    after = [r for r in results if r["issued"] > recovered and r["status"] not in (200, 201)]
    if after:
        problems.append(f"not recovered, writes issued after recovery failed: {after[:5]}")
    figures = {"requests": len(results), "acknowledged": sum(r["status"] in (200, 201) for r in results),
               "not_answered": sum(r["status"] is None for r in results),
               "acknowledged_by_step": dict(Counter(r["op"] for r in results if r["status"] in (200, 201))),
               "answers": dict(Counter(str(a) for r in results for a in r["seen"])),
               "reservations_settled_s": round(pending_s, 1), "outbox_settled_s": round(settled_s, 1),
               **ledger_figures}
    assert not problems, f"{problems}; {figures}"
    return figures


def chain_problems(results, vouchers):
    """Per enterprise: the stored voucher, order and claim are exactly where its acknowledged steps
    left them, or one step further when the next step got no definite answer."""
    stored = defaultdict(list)
    for voucher in vouchers:
        stored[voucher["enterprise_id"]].append(voucher)
    steps = defaultdict(list)
    for r in results:
        steps[r["enterprise"]].append(r)
    problems = []
    for enterprise, done in steps.items():
        acked = [r for r in done if r["status"] in (200, 201)]
        if done[-1]["status"] not in (200, 201, None):
            problems.append(f"{enterprise}: {done[-1]['op']} refused with {done[-1]['status']}")
        last = len(acked) - 1      # steps follow LADDER in order; a chain stops at its first non-2xx
        allowed = {last, last + 1} if done[-1]["status"] is None else {last}
        mine = stored.get(enterprise, [])
        if len(mine) > 1:
            problems.append(f"{enterprise}: {len(mine)} vouchers for one application")
            continue
        orders = list(mine[0]["orders"].values()) if mine else []
        if len(orders) > 1:
            problems.append(f"{enterprise}: {len(orders)} orders for one order request")
            continue
        if acked and (not mine or mine[0]["_id"] != acked[0]["id"]):
            problems.append(f"{enterprise}: acknowledged voucher {acked[0]['id']} not stored")
            continue
        order = orders[0] if orders else None
        where = (-1 if not mine else 0 if order is None else
                 next((n for n, (_, state, claim) in enumerate(LADDER) if n and state == order["state"]
                       and claim == (order.get("claim") or {}).get("state")), "unknown"))
        if where not in allowed:
            problems.append(f"{enterprise}: stored at step {where} ({order and order['state']}), "
                            f"the acknowledged steps imply {sorted(allowed)}: {[(r['op'], r['status']) for r in done]}")
    return problems


def balance_problems(money, vouchers):
    """Conservation from HTTP and from the RPC, and the buckets exactly what the stored vouchers,
    orders and claims imply."""
    problems = []
    http = requests.get(f"{money.vouchers.base}/api/v1/programmes/{money.programme_id}/balances",
                        headers=money.officer, timeout=10).json()
    with ClusterRpcProxy({"AMQP_URI": money.stack.amqp_uri}, timeout=10) as rpc:
        rpc_row = next(p for p in rpc.vouchers.programme_balances() if p["programme_id"] == money.programme_id)
        per_voucher, after = [], None
        while True:
            page = rpc.vouchers.voucher_balances(money.programme_id, after=after)
            per_voucher += page["vouchers"]
            if not (after := page["next"]):
                break
    buckets = ("budget_fen", "remaining_fen", "free_fen", "held_fen", "paid_fen", "returned_fen")
    if {k: http[k] for k in buckets} != {k: rpc_row[k] for k in buckets}:
        problems.append(f"HTTP balances {http} differ from the RPC's {rpc_row}")
    if http["budget_fen"] != sum(http[k] for k in buckets[1:]):
        problems.append(f"conservation broken: {http}")
    orders = [o for v in vouchers for o in v["orders"].values()]
    paid = sum((o.get("claim") or {}).get("state") == "paid" for o in orders)
    implied = {"issued": FACE_FEN * len(vouchers), "held": SUBSIDY_FEN * (len(orders) - paid),
               "paid": SUBSIDY_FEN * paid, "returned_fen": 0}
    actual = {"issued": http["budget_fen"] - http["remaining_fen"], "held": http["held_fen"],
              "paid": http["paid_fen"], "returned_fen": http["returned_fen"]}
    if actual != implied:
        problems.append(f"balances {actual} differ from what is stored {implied}")
    overspent = [v["voucher_id"] for v in per_voucher if min(v[k] for k in buckets[2:]) < 0
                 or sum(v[k] for k in buckets[2:]) != v["face_value_fen"]]
    if overspent:
        problems.append(f"vouchers whose buckets do not add up to their face value: {overspent[:5]}")
    summed = {k: sum(v[k] for v in per_voucher) for k in buckets[2:]}
    if summed != {k: http[k] for k in buckets[2:]} or len(per_voucher) != len(vouchers):
        problems.append(f"{len(per_voucher)} vouchers from the RPC sum to {summed}, the programme says {http}")
    return problems


def ledger_problems(money, vouchers, problems):
    """Every tapped vouchers event is in the ledger once, one event id per record and step, an
    event for every stored voucher, order and payment; the ledger verifies."""
    money.tapped += money.tap.drain()
    ids = defaultdict(set)
    for event in money.tapped:
        ids[(event["type"], event["aggregate_id"])].add(event["event_id"])
    twice = {k: v for k, v in ids.items() if len(v) > 1}
    if twice:
        problems.append(f"one step published under several event ids: {list(twice.items())[:5]}")
    orders = {order_id: o for v in vouchers for order_id, o in v["orders"].items()}
    expected = {"voucher.issued": len(vouchers), "order.placed": len(orders),
                "claim.paid": sum((o.get("claim") or {}).get("state") == "paid" for o in orders.values())}
    published = Counter(t for t, _ in ids)
    if {t: published[t] for t in expected} != expected:
        problems.append(f"events published {dict(published)}, stored records imply {expected}")
    wanted = {event["event_id"] for event in money.tapped}
    auditor = {"Authorization": "Bearer " + money.audit.signer.token("auditor", "faults")}
    started, ledger = time.monotonic(), []

    def complete():
        nonlocal ledger
        ledger = entries(money.audit.base, auditor)
        return wanted <= {e["event_id"] for e in ledger}
    try:
        wait_until("every tapped event in the ledger", complete, 180, interval=1)
    except TimeoutError:
        problems.append(f"{len(wanted - {e['event_id'] for e in ledger})} of {len(wanted)} events not in the ledger")
    in_ledger = Counter(e["event_id"] for e in ledger)
    if [i for i, n in in_ledger.items() if n > 1]:
        problems.append(f"events recorded twice: {[i for i, n in in_ledger.items() if n > 1][:5]}")
    foreign = {e["event_id"] for e in ledger if e["event"]["producer"] == "vouchers"} - wanted
    if foreign:
        problems.append(f"{len(foreign)} vouchers events in the ledger were never published: {sorted(foreign)[:5]}")
    verdict = requests.get(money.audit.base + "/api/v1/audit/verify", headers=auditor, timeout=60).json()
    if not verdict["ok"]:
        problems.append(f"ledger does not verify: {verdict['problems'][:5]}")
    return {"vouchers_events": len(wanted), "ledger_entries": len(ledger),
            "ledger_complete_s": round(time.monotonic() - started, 1)}


def entries(base, headers):
    got, after = [], -1
    while True:
        page = requests.get(base + "/api/v1/audit/entries", params={"after": after, "limit": 500}, headers=headers,
                            timeout=30).json()
        got += page["items"]
        if page["next_cursor"] is None:
            return got
        after = page["next_cursor"]


def test_kill_minus_9_of_the_vouchers_service_loses_no_money_and_no_event(money):
    def fault():
        money.vouchers.kill9()
        money.vouchers.start()
    run_with_fault(money, fault)


def test_a_rabbitmq_restart_loses_no_money_and_no_event(money):
    run_with_fault(money, money.stack.restart_rabbit)


def test_a_ferretdb_crash_loses_no_money_and_no_event(money):
    figures = run_with_fault(money, money.stack.restart_ferret)
    assert "500" not in figures["answers"], figures     # an outage is a 503 to retry, not a bug
