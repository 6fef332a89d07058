"""Credit ratings by 国知发运字〔2023〕10号: worked examples on every band edge, the rule table by date,
eligibility against the line, status transitions, and the ranking of recommendations."""
from datetime import date

import pytest

from ipvkit.errors import IllegalTransition, RuleRefused
from services.providers import domain

PERIOD_END = date(2025, 12, 31)


def graded(points, **extra):
    return dict({"indicator": "abnormal_filings", "points": points, "count": 1}, **extra)


def fixed(indicator, count=1):
    return {"indicator": indicator, "count": count}


@pytest.mark.parametrize("deductions,bonuses,score,level", [
    ([], [], 100, "A"),                                                   # the starting score
    ([graded(10)], [], 90, "A"),                                          # A's lowest score
    ([graded(11)], [], 89, "B"),
    ([graded(20)], [], 80, "B"),
    ([graded(21)], [], 79, "C"),
    ([graded(25), fixed("abnormal_case_volume")], [], 60, "C"),          # 100 - 25 - 15
    ([graded(26), fixed("abnormal_case_volume")], [], 59, "D"),
    ([fixed("ordered_to_stop_new_business")], [], 40, "D"),
    ([fixed("licence_revoked"), fixed("manager_convicted")], [], 0, "D"),  # never below 0
    ([graded(3)], [fixed("honour")], 100, "A"),                          # 100 with a bonus is still A
    ([], [fixed("reported_violation")], 101, "A+"),                      # above 100: A+, only by a bonus
    ([graded(20)], [fixed("honour", 2)], 86, "B"),                       # a bonus lifts within the bands too
])
def test_worked_examples_on_every_band_edge(deductions, bonuses, score, level):
    result = domain.evaluate(PERIOD_END, deductions, bonuses)
    assert (result["score"], result["level"]) == (score, level)
    assert result["base"] == 100 and result["rules_version"] == "国知发运字〔2023〕10号"


def test_each_line_of_the_explanation_names_its_indicator_and_points():
    result = domain.evaluate(PERIOD_END, [graded(12, note="2025年非正常申请通报"), fixed("irregular_practice", 3)],
                             [fixed("honour")])
    assert [(i["indicator"], i["points"], i["confirmed"]) for i in result["deductions"]] == [
        ("abnormal_filings", 12, True), ("irregular_practice", 6, False)]
    assert result["deductions"][0]["note"] == "2025年非正常申请通报"
    assert result["bonus_total"] == 3 and result["score"] == 85 and result["level"] == "B"


def test_caps_per_indicator_and_on_bonuses():
    result = domain.evaluate(PERIOD_END, [fixed("irregular_practice", 50)],
                             [fixed("honour", 2), fixed("social_contribution", 2), fixed("reported_violation", 3)])
    assert result["deductions"][0]["points"] == 20 and result["deductions"][0]["capped"]
    assert result["bonus_total"] == 10 and result["bonus_capped"] and result["score"] == 90


@pytest.mark.parametrize("deductions,rule", [
    ([graded(41)], "indicator_cap"),                      # abnormal filings cost up to 40
    ([{"indicator": "abnormal_filings", "count": 1}], "graded_points"),
    ([dict(fixed("licence_revoked"), points=50)], "fixed_points"),
])
def test_points_that_break_the_rules_are_refused(deductions, rule):
    with pytest.raises(RuleRefused) as refused:
        domain.evaluate(PERIOD_END, deductions, [])
    assert refused.value.detail["rule"] == rule


def test_rules_are_chosen_by_the_period_end_date():
    assert domain.rules_on(date(2023, 5, 1)).version == "国知发运字〔2023〕10号"
    with pytest.raises(RuleRefused) as refused:
        domain.evaluate(date(2023, 4, 30), [], [])
    assert refused.value.detail["rule"] == "rating_rules_period"


def test_a_back_filled_period_does_not_replace_a_later_rating():
    current = {"evaluation_id": "ev_1", "period_to": "2025-12-31"}
    assert domain.becomes_current(None, date(2024, 12, 31))
    assert domain.becomes_current(current, date(2025, 12, 31))     # a re-evaluation of the same period
    assert not domain.becomes_current(current, date(2024, 12, 31))


@pytest.mark.parametrize("level,line,eligible", [
    ("A+", "B", True), ("A", "B", True), ("B", "B", True), ("C", "B", False), ("D", "B", False),
    ("C", "C", True), ("B", "A", False), (None, "B", True),
])
def test_eligibility_line(level, line, eligible):
    assert domain.meets_line(level, line, unrated_eligible=True) is eligible


def test_suspended_cancelled_or_blacklisted_agencies_are_not_eligible():
    agency = {"status": "active", "level": "A", "blacklist": None}
    assert domain.is_eligible(agency, "B", True)
    assert not domain.is_eligible(dict(agency, status="suspended"), "B", True)
    assert not domain.is_eligible(dict(agency, blacklist={"reason": "严重失信"}), "B", True)
    assert not domain.is_eligible(dict(agency, level=None), "B", unrated_eligible=False)


@pytest.mark.parametrize("status,action,result", [
    ("active", "suspend", "suspended"), ("suspended", "reinstate", "active"),
    ("active", "cancel", "cancelled"), ("suspended", "cancel", "cancelled"),
])
def test_legal_transitions(status, action, result):
    assert domain.next_status(status, action) == result


@pytest.mark.parametrize("status,action", [
    ("active", "reinstate"), ("suspended", "suspend"), ("cancelled", "reinstate"), ("cancelled", "cancel"),
])
def test_illegal_transitions_name_the_current_state(status, action):
    with pytest.raises(IllegalTransition) as illegal:
        domain.next_status(status, action)
    assert illegal.value.status == 409 and illegal.value.detail["state"] == status


def test_blacklisting_rules():
    today = date(2026, 3, 1)
    with pytest.raises(IllegalTransition):
        domain.check_blacklist({"blacklist": {"reason": "x"}}, today, None, today)
    with pytest.raises(RuleRefused):
        domain.check_blacklist({"blacklist": None}, date(2026, 3, 2), None, today)
    domain.check_blacklist({"blacklist": None}, date(2025, 1, 1), None, today)
    assert domain.listing_over({"listed_to": "2026-02-28"}, today)
    assert not domain.listing_over({"listed_to": "2026-03-01"}, today)   # its last day still counts
    assert not domain.listing_over({"listed_to": None}, today)


def order_event(kind, **data):
    return {"type": kind, "data": data}


def test_order_outcomes_build_the_service_record():
    effects = [domain.order_effect(order_event(*e[:1], **e[1])) for e in [
        ("order.placed", {}), ("order.delivered", {"on_time": True}), ("order.delivered", {"on_time": False}),
        ("order.disputed", {}), ("order.dispute_resolved", {"upheld": False}), ("claim.rejected", {}),
        ("order.dispute_resolved", {"upheld": True}), ("claim.paid", {}), ("order.cancelled", {}),
    ]]
    assert [closed for closed, _ in effects] == [None, None, None, None, None, "claim_rejected", "dispute_upheld",
                                                 "paid", "cancelled"]
    orders = [{"open": True, **inc} for _, inc in effects]
    record = domain.service_record(orders)
    assert record["delivered"] == 2 and record["on_time"] == 1 and record["on_time_rate"] == 0.5
    assert (record["disputes"], record["disputes_upheld"], record["claims_rejected"]) == (1, 1, 1)


def candidate(agency_id, level, score, delivered=0, on_time=0, upheld=0):
    record = dict(domain.service_record([]), delivered=delivered, on_time=on_time, disputes=upheld,
                  disputes_upheld=upheld, on_time_rate=on_time / delivered if delivered else None)
    return {"agency_id": agency_id, "level": level, "score": score, "service_record": record}


def test_ranking_by_level_then_score_then_service_record_with_reasons():
    ranked = domain.rank([candidate("c", "B", 85), candidate("a", "A", 92, 10, 9), candidate("b", "A", 95),
                          candidate("d", "A", 92, 10, 10), candidate("e", None, None)])
    assert [c["agency_id"] for c in ranked] == ["b", "d", "a", "c", "e"]
    assert ranked[0]["reason"].startswith("#1: highest ranked. credit level A (score 95)")
    assert "lower score (92 < 95)" in ranked[1]["reason"]
    assert "lower on-time delivery rate" in ranked[2]["reason"] and "9 of 10 deliveries on time" in ranked[2]["reason"]
    assert "lower credit level than #3 (B below A)" in ranked[3]["reason"]
    assert "not yet rated" in ranked[4]["reason"]
