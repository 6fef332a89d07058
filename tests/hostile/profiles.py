"""What the service-independent hostile tests need to know about each service, and nothing more.

Routes, roles and consumers are discovered from the code (`ipvkit.deadletters.services()`); a
profile adds what code cannot say: how to create records to act on (`seed`), which path parameter
or body field names the owning enterprise or agency (`owners`), a valid body per write
(`bodies`), and a valid event per consumed type (`SAMPLES`). A service without a profile is still
covered by role checks, schemathesis and poison messages; a profile makes the checks sharper
(own vs someone else's record, valid events actually applied).

To add a service: write `seed(client) -> Seed`, its `owners`, and `bodies` for writes whose owner
is in the body; register it in PROFILES; add a `SAMPLES` entry for every event type it consumes.
"""
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from stdnum.cn import uscc

_serial = itertools.count(1)


def credit_code(region="350100"):
    """A fresh valid 统一社会信用代码 of an enterprise (91…) in `region`."""
    body = f"91{region}{next(_serial):09d}"
    return body + uscc.calc_check_digit(body)


@dataclass
class Seed:
    """Records created before a test. `own`/`other`: role -> the subject owning a record / another
    subject of that role. `records`: role -> {path parameter: (id of a record the own subject owns,
    id of one the other subject owns)}, for routes that name a record, not its owner. `path`:
    values for path parameters nothing else fills."""
    own: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    path: dict = field(default_factory=dict)


@dataclass
class Profile:
    seed: object = None                            # seed(client) -> Seed
    # role -> {"path": path parameter naming the owner, "body": {operation: body field}}; by
    # convention `<role>_id` in a path names the owning enterprise or agency
    owners: dict = field(default_factory=lambda: {r: {"path": f"{r}_id"} for r in ("enterprise", "agency")})
    bodies: dict = field(default_factory=dict)     # operation -> body(owner id or None) -> dict
    config: dict = field(default_factory=dict)     # config overrides for the test container
    # what someone else's record answers: 403, or 404 where even its existence is not to be told
    other_status: int = 403


# -- enterprises -----------------------------------------------------------------------------------
def enterprise_body(credit):
    return {"credit_code": credit or credit_code(), "name": "福州闽光精密制造有限公司", "region": "350102",
            "industry": "C34", "size": "small"}


QUALIFICATION = {"tier": "srdi_sme", "level": "provincial", "certificate_no": "闽专精特新〔2025〕0117",
                 "issuing_authority": "福建省工业和信息化厅", "valid_from": "2025-01-01", "valid_to": "2027-12-31"}


def seed_enterprises(client):
    own, other = credit_code(), credit_code()
    for code in (own, other):
        assert client("POST", "/api/v1/enterprises", json=enterprise_body(code)).status_code == 201
    granted = client("POST", f"/api/v1/enterprises/{own}/qualifications", json=QUALIFICATION)
    assert granted.status_code == 201, granted.text
    return Seed(own={"enterprise": own}, other={"enterprise": other},
                path={"qualification_id": granted.json()["qualification_id"], "notification_id": "n-none"})


# -- providers ---------------------------------------------------------------------------------------
def agency_body(credit):
    return {"credit_code": credit or credit_code(), "name": "闽江专利代理事务所", "kind": "patent",
            "licence_no": "35101", "region": "350102", "service_codes": ["PAT-01"],
            "contact": {"person": "林律师", "phone": "0591-87654321"}}


def seed_providers(client):
    own, other = credit_code(), credit_code()
    for code in (own, other):
        registered = client("POST", "/api/v1/agencies", json=agency_body(code))
        assert registered.status_code == 201, registered.text
    return Seed(own={"agency": own}, other={"agency": other})


# -- vouchers ----------------------------------------------------------------------------------------
def _feed(client, handler, event):
    """Hands an event to a consumer of the running container, as its queue would."""
    from nameko.testing.services import entrypoint_hook

    from ipvkit.events import parse
    with entrypoint_hook(client.container, handler) as hook:
        hook(parse(json.dumps(event)))


def _event(type_, producer, aggregate_id, data):
    from ipvkit.events import new_event
    return new_event(type=type_, producer=producer, aggregate_id=aggregate_id, sequence=1, data=data,
                     actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc))


def seed_vouchers(client):
    """Two qualified enterprises, two eligible agencies, an open programme, and for each pair a
    voucher and an order: enterprise 1 and agency 1 own the first of each, 2 and 2 the second."""
    today = date.today()
    enterprises, agencies = [credit_code(), credit_code()], ["ag-1", "ag-2"]
    for code in enterprises:
        _feed(client, "on_qualification", _event("enterprise.qualification_granted", "enterprises", "q-" + code, {
            "qualification_id": "q-" + code, "enterprise_id": code, "tier": "srdi_sme", "level": "provincial",
            "certificate_no": "C-" + code, "issuing_authority": "省工信厅", "valid_from": "2025-01-01",
            "valid_to": (today + timedelta(days=700)).isoformat()}))
    for agency in agencies:
        _feed(client, "on_agency", _event("provider.registered", "providers", agency, {
            "agency_id": agency, "name": "玉环专利代理事务所", "credit_code": credit_code(), "kind": "patent",
            "region": "331021", "service_codes": ["PAT-01"], "related_credit_codes": [], "eligibility_line": "B",
            "level": "A", "eligible": True}))
    created = client("POST", "/api/v1/programmes", json={
        "name": "玉环市知识产权服务券", "region": "331021", "fund_source": "中小企业发展专项资金",
        "budget_fen": 10_000_000, "opens_on": (today - timedelta(days=30)).isoformat(),
        "closes_on": (today + timedelta(days=300)).isoformat(), "validity_days": 180,
        "redemption_model": "agency_redeems",
        "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000}],
        "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                       "item_cap_fen": 1_000_000, "agency_kinds": ["patent"]}]})
    assert created.status_code == 201, created.text
    pid = created.json()["programme_id"]
    assert client("POST", f"/api/v1/programmes/{pid}/open").status_code == 200
    vouchers, orders = [], []
    for code, agency in zip(enterprises, agencies):
        voucher = client("POST", "/api/v1/vouchers", "enterprise", code, json={"programme_id": pid})
        assert voucher.status_code == 201, voucher.text
        vouchers.append(voucher.json()["voucher_id"])
        order = client("POST", "/api/v1/orders", "enterprise", code, json={
            "voucher_id": vouchers[-1], "agency_id": agency, "service_code": "PAT-01", "price_fen": 1_000_000,
            "deliver_by": (today + timedelta(days=60)).isoformat()})
        assert order.status_code == 201, order.text
        orders.append(order.json()["order_id"])
    return Seed(own={"enterprise": enterprises[0], "agency": agencies[0]},
                other={"enterprise": enterprises[1], "agency": agencies[1]},
                records={"enterprise": {"voucher_id": tuple(vouchers), "order_id": tuple(orders)},
                         "agency": {"order_id": tuple(orders)}},
                path={"programme_id": pid, "voucher_id": vouchers[0], "order_id": orders[0]})


# -- documents ---------------------------------------------------------------------------------------
def seed_documents(client):
    """Two orders (as the vouchers service's order.placed makes them known), each with a file its
    agency uploaded: enterprise 1 and agency 1 are the first order's parties, 2 and 2 the second's."""
    from tests.document_samples import pdf
    enterprises, agencies, documents = [credit_code(), credit_code()], ["ag-1", "ag-2"], []
    for n, (enterprise, agency) in enumerate(zip(enterprises, agencies)):
        order_id = f"o_{'%020d' % n}_{'%08d' % n}"
        _feed(client, "on_order_placed", _event("order.placed", "vouchers", order_id, {
            "programme_id": "p_1", "voucher_id": "v_1", "enterprise_id": enterprise, "order_id": order_id,
            "agency_id": agency, "service_code": "PAT-01", "price_fen": 1_000_000, "subsidy_fen": 500_000,
            "copay_fen": 500_000, "redemption_model": "agency_redeems", "deliver_by": "2026-09-30"}))
        uploaded = client("POST", "/api/v1/documents", "agency", agency, files={"file": ("合同.pdf", pdf())},
                          data={"kind": "contract", "order_id": order_id})
        assert uploaded.status_code == 201, uploaded.text
        documents.append(uploaded.json()["document_id"])
    records = {"document_id": tuple(documents)}
    return Seed(own={"enterprise": enterprises[0], "agency": agencies[0]},
                other={"enterprise": enterprises[1], "agency": agencies[1]},
                records={"enterprise": records, "agency": records}, path={"document_id": documents[0]})


def seed_audit(client):
    """A programme, a voucher and an order in the ledger (fed to its consumer), read models built from
    them, and a signed checkpoint: so proofs, reports and entries answer with real records."""
    code, today = credit_code(), date.today().isoformat()
    programme = {"programme_id": "p-1", "name": "玉环市知识产权服务券", "region": "331021",
                 "fund_source": "中小企业发展专项资金", "budget_fen": 10_000_000, "opens_on": "2026-01-01",
                 "closes_on": "2026-12-31", "validity_days": 180, "redemption_model": "agency_redeems",
                 "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000}],
                 "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                                "item_cap_fen": 1_000_000, "agency_kinds": ["patent"]}]}
    voucher = {"programme_id": "p-1", "voucher_id": "v-1", "enterprise_id": code}
    for event in (
            _event("programme.created", "vouchers", "p-1", programme),
            _event("voucher.issued", "vouchers", "v-1", dict(voucher, tier="srdi_sme", face_value_fen=2_000_000,
                                                              valid_from=today, valid_to="2026-12-31",
                                                              budget_remaining_fen=8_000_000)),
            _event("order.placed", "vouchers", "o-1", dict(voucher, order_id="o-1", agency_id="ag-1",
                                                            service_code="PAT-01", price_fen=1_000_000,
                                                            subsidy_fen=500_000, copay_fen=500_000,
                                                            redemption_model="agency_redeems", deliver_by=today))):
        _feed(client, "record", event)
    checkpoint = client("POST", "/api/v1/audit/checkpoints", "ops", "ops-1")
    assert checkpoint.status_code == 201, checkpoint.text
    # The checkpoint's own event comes back through the audit exchange: recorded before the test starts.
    deadline = time.monotonic() + 60
    while client("GET", "/api/v1/audit/head", "auditor", "auditor-1").json()["size"] < 4:
        assert time.monotonic() < deadline, "the checkpoint's event was not recorded within 60 s"
        time.sleep(0.1)
    return Seed(path={"position": "1", "size": str(checkpoint.json()["size"])})


PROFILES = {
    "enterprises": Profile(
        seed=seed_enterprises,
        owners={"enterprise": {"path": "enterprise_id", "body": {"register": "credit_code"}}},
        bodies={"register": enterprise_body, "grant_qualification": lambda _: dict(QUALIFICATION),
                "revoke_qualification": lambda _: {"reason": "certificate withdrawn"},
                "verify": lambda _: {"method": "business_licence", "reference": "EBL-2026-000117"}},
    ),
    "providers": Profile(
        seed=seed_providers,
        owners={"agency": {"path": "agency_id", "body": {"register": "credit_code"}}},
        bodies={"register": agency_body, "update_agency": lambda _: {"name": "闽江知识产权代理有限公司"}},
    ),
    "vouchers": Profile(seed=seed_vouchers),
    # Someone else's file answers 404, as if it did not exist: ids are not to be probed.
    "documents": Profile(seed=seed_documents, other_status=404),
    # Reconciliation asks the vouchers service, which these one-service tests do not run: its 503
    # should come fast.
    "audit": Profile(seed=seed_audit, config={"AUDIT_RPC_TIMEOUT_S": 0.5}),
}


def profile(service):
    return PROFILES.get(service, Profile())


# -- valid events per type: (seed) -> event data -----------------------------------------------------
def _rating_dropped(seed):
    enterprise = seed.own.get("enterprise") or credit_code()
    return {"agency_id": "ag-1", "agency_name": "闽江专利代理事务所", "eligibility_line": "B", "eligible": False,
            "was_eligible": True, "old_level": "B", "new_level": "C", "score": 72,
            "affected_enterprises": [{"enterprise_id": enterprise, "order_ids": ["o-1"]}]}


def _blacklisted(seed):
    enterprise = seed.own.get("enterprise") or credit_code()
    return {"agency_id": "ag-1", "agency_name": "闽江专利代理事务所", "eligibility_line": "B", "eligible": False,
            "reason": "伪造申请材料", "source": "国家知识产权局", "listed_from": date(2026, 1, 1).isoformat(),
            "listed_to": None, "affected_enterprises": [{"enterprise_id": enterprise, "order_ids": ["o-1"]}]}


SAMPLES = {
    "provider.rating_changed": _rating_dropped,
    "provider.blacklisted": _blacklisted,
}


# -- a valid-looking value for any schema, for event types without a sample ----------------------------
def example(schema):
    """Data that `schema` loads, built from its fields' validators; good enough for types nobody
    wrote a sample for (the handler may still refuse it as a business rule)."""
    return {name: _value(f) for name, f in schema().fields.items() if f.required or f.load_default is None}


def _value(f):
    from marshmallow import fields, validate

    from ipvkit.contracts.common import CreditCode
    checks = list(f.validators) + (list(f.inner.validators) if isinstance(f, fields.List) else [])
    one_of = next((v for v in checks if isinstance(v, validate.OneOf)), None)
    if isinstance(f, fields.List):
        length = next((v for v in f.validators if isinstance(v, validate.Length)), None)
        return [_value(f.inner) for _ in range(max(1, length.min or 0) if length else 1)]
    if one_of is not None:
        return list(one_of.choices)[0]
    if isinstance(f, CreditCode):
        return credit_code()
    if isinstance(f, fields.Nested):
        return example(type(f.schema))
    if isinstance(f, fields.Boolean):
        return True
    if isinstance(f, fields.Integer):
        ranged = next((v for v in f.validators if isinstance(v, validate.Range)), None)
        return max(1, ranged.min or 0) if ranged and ranged.min is not None else 1
    if isinstance(f, fields.Date):  # before DateTime: Date is a subclass of it
        return "2026-01-01"
    if isinstance(f, fields.DateTime):
        return datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()
    if isinstance(f, fields.UUID):
        return "00000000-0000-4000-8000-000000000001"
    if isinstance(f, fields.Dict):
        return {}
    pattern = next((v for v in f.validators if isinstance(v, validate.Regexp)), None)
    if pattern is not None:
        from hypothesis import Phase, find, settings, strategies
        # The first string generated, unshrunk: shrinking a 64-digit hash took 3-20 s of CPU, during
        # which the service under test in this process could not run at all.
        return find(strategies.from_regex(pattern.regex, fullmatch=True), lambda _: True,
                    settings=settings(phases=[Phase.generate], database=None, derandomize=True))
    length = next((v for v in f.validators if isinstance(v, validate.Length)), None)
    return "x" * max(1, (length.min or 1) if length else 1)
