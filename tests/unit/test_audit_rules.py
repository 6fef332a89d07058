"""Fund movements and red-flag rules of the audit service, as pure functions."""
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import domain

T = domain.Thresholds()


def entry(position, type_, data, occurred_at="2026-03-01T00:00:00.000Z"):
    return {"position": position, "event": {"event_id": f"e{position}", "type": type_, "occurred_at": occurred_at,
                                       "data": data}}


def test_each_movement_keeps_budget_equal_to_the_five_buckets():
    ids = {"programme_id": "P", "voucher_id": "V", "enterprise_id": "E", "order_id": "O", "agency_id": "A"}
    events = [
        entry(0, "programme.created", {"programme_id": "P", "region": "350100", "budget_fen": 1000}),
        entry(1, "voucher.issued", dict(ids, tier="srdi_sme", face_value_fen=300)),
        entry(2, "order.placed", dict(ids, service_code="PAT-01", subsidy_fen=200)),
        entry(3, "claim.paid", dict(ids, claim_id="C", amount_fen=120)),
        entry(4, "order.placed", dict(ids, order_id="O2", service_code="PAT-01", subsidy_fen=50)),
        entry(5, "voucher.expired", dict(ids, returned_fen=50, held_fen=130)),
        entry(6, "order.cancelled", dict(ids, order_id="O2", released_fen=50, released_to="programme")),
    ]
    facts = [f for e in events for f in domain.facts_for(e, {"region": "350100", "budget_fen": 1000},
                                                         {"tier": "srdi_sme"}, {})]
    sums = domain.balances(domain.sum_facts(facts, "programme"))["P"]
    assert sums == {"budget": 1000, "remaining": 700, "free": 0, "held": 80, "paid": 120, "returned": 100}
    assert sum(sums[b] for b in domain.BUCKETS) == sums["budget"]
    assert {f["region"] for f in facts} == {"350100"} and {f["month"] for f in facts} == {"2026-03"}


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["order", "pay", "release_v", "release_p"]), st.integers(1, 500)),
                max_size=30))
def test_conservation_holds_for_any_sequence_of_movements(steps):
    ids = {"programme_id": "P", "voucher_id": "V", "enterprise_id": "E", "order_id": "O", "agency_id": "A"}
    events = [entry(0, "programme.created", {"programme_id": "P", "region": "350100", "budget_fen": 10_000}),
              entry(1, "voucher.issued", dict(ids, tier="srdi_sme", face_value_fen=5_000))]
    free, held = 5_000, 0
    for n, (step, fen) in enumerate(steps, start=2):
        if step == "order" and fen <= free:
            events.append(entry(n, "order.placed", dict(ids, service_code="PAT-01", subsidy_fen=fen)))
            free, held = free - fen, held + fen
        elif step == "pay" and fen <= held:
            events.append(entry(n, "claim.paid", dict(ids, claim_id=f"C{n}", amount_fen=fen)))
            held -= fen
        elif step.startswith("release") and fen <= held:
            to = "voucher" if step == "release_v" else "programme"
            events.append(entry(n, "order.cancelled", dict(ids, released_fen=fen, released_to=to)))
            held, free = held - fen, free + (fen if to == "voucher" else 0)
    facts = [f for e in events for f in domain.facts_for(e, {"budget_fen": 10_000}, {}, {})]
    sums = domain.balances(domain.sum_facts(facts, "programme"))["P"]
    assert sum(sums[b] for b in domain.BUCKETS) == sums["budget"] == 10_000
    assert (sums["free"], sums["held"]) == (free, held)


def test_a_budget_change_moves_budget_and_remaining_by_the_difference():
    change = entry(9, "programme.changed", {"programme_id": "P", "region": "350100", "budget_fen": 1500})
    moves = {(f["bucket"], f["fen"]) for f in domain.facts_for(change, {"budget_fen": 1000}, {}, {})}
    assert moves == {("budget", 500), ("remaining", 500)}
    assert domain.facts_for(change, {"budget_fen": 1500}, {}, {}) == []


def order(oid, subsidy, position):
    return {"_id": oid, "enterprise": "E", "agency": "A", "service_code": "PAT-01", "programme": "P",
            "subsidy_fen": subsidy, "position": position, "event_id": f"e{position}"}


def test_split_orders_needs_several_under_the_cap_that_together_exceed_it():
    assert domain.split_orders([order("O1", 30, 1), order("O2", 30, 2)], 50, T)["ledger_positions"] == [1, 2]
    assert domain.split_orders([order("O1", 20, 1), order("O2", 30, 2)], 50, T) is None       # 50 is not over 50
    assert domain.split_orders([order("O1", 50, 1), order("O2", 30, 2)], 50, T) is None       # one was capped
    assert domain.split_orders([order("O1", 30, 1), order("O2", 30, 2)], 50,
                               domain.Thresholds(split_min_orders=3)) is None
    assert domain.split_orders([order("O1", 30, 1)], None, T) is None                          # unknown item


def placed(enterprise="E", occurred_at="2026-03-01T00:00:00.000Z"):
    return {"event_id": "e7", "_position": 7, "occurred_at": occurred_at, "type": "order.placed",
            "data": {"order_id": "O", "enterprise_id": enterprise, "agency_id": "A", "programme_id": "P"}}


def test_related_party_is_the_agency_itself_or_a_declared_affiliate():
    agency = {"credit_code": "SELF", "related": ["AFF"], "profile_position": 2, "profile_event_id": "e2"}
    assert domain.related_party(placed("AFF"), agency)["ledger_positions"] == [2, 7]
    assert domain.related_party(placed("SELF"), agency) is not None
    assert domain.related_party(placed("OTHER"), agency) is None


def test_an_order_counts_as_after_the_drop_only_from_the_drop_on():
    standing = domain.standing_of({"type": "provider.rating_changed", "event_id": "e3",
                                   "occurred_at": "2026-03-01T00:00:00.000Z",
                                   "data": {"new_level": "C", "eligibility_line": "B", "eligible": False}}, 3)
    agency = {"standing": standing}
    assert domain.order_after_downgrade(placed(), agency)["ledger_positions"] == [3, 7]          # same instant
    assert domain.order_after_downgrade(placed(occurred_at="2026-02-28T23:59:59.999Z"), agency) is None
    assert domain.order_after_downgrade(placed(), {"standing": dict(standing, eligible=True)}) is None


def test_concentration_and_claims_at_cap_respect_their_thresholds():
    orders = [{"position": n, "event_id": f"e{n}"} for n in range(6)]
    assert domain.concentration("350102", "A", 10, 6, orders, T) is not None                   # 60 % of 10
    assert domain.concentration("350102", "A", 10, 5, orders, T) is None
    assert domain.concentration("350102", "A", 9, 9, orders, T) is None                        # too few orders
    claims = [{"agency": "A", "programme": "P", "position": n, "event_id": f"e{n}"} for n in range(3)]
    assert domain.claims_at_cap(claims, T)["ledger_positions"] == [0, 1, 2]
    assert domain.claims_at_cap(claims[:2], T) is None


def test_a_repeated_claim_for_the_same_order_is_not_duplicate_evidence():
    claim = {"event_id": "e9", "_position": 9, "data": {"order_id": "O1", "claim_id": "C2", "agency_id": "A",
                                                        "enterprise_id": "E", "programme_id": "P"}}
    same_order = [{"order_id": "O1", "position": 4, "event_id": "e4"}]
    assert domain.duplicate_evidence(claim, "invoice_no", "INV-1", same_order) is None
    other = [{"order_id": "O0", "position": 2, "event_id": "e2"}]
    assert domain.duplicate_evidence(claim, "invoice_no", "INV-1", other)["ledger_positions"] == [2, 9]


def test_thresholds_come_from_configuration():
    assert domain.Thresholds.from_config({"AUDIT_CAP_CLAIMS_MIN": "5", "AUDIT_SPLIT_WINDOW_DAYS": ""}) == \
        domain.Thresholds(cap_claims_min=5)
