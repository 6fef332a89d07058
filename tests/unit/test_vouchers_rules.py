"""The vouchers service's pure rules: subsidy arithmetic, eligibility, tiers, state machines,
and the conservation read."""
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvkit.errors import IllegalTransition, RuleRefused
from services.vouchers import domain

TODAY = date(2026, 6, 1)
ITEM = {"service_code": "PAT-01", "agency_kinds": ["patent"], "subsidy_ratio_bp": 5000, "item_cap_fen": 1_000_000}
AGENCY = {"kind": "patent", "status": "active", "eligible": True, "level": "A", "eligibility_line": "B",
          "service_codes": ["PAT-01"], "credit_code": "91330100MA2H00001P", "related_credit_codes": ["91330100MA2H00002T"],
          "blacklist": None}


@given(price=st.integers(1, 10**11), ratio=st.integers(1, 10000), cap=st.integers(1, 10**10), free=st.integers(0, 10**10))
def test_subsidy_is_the_least_of_ratio_cap_and_balance_and_the_rest_is_copay(price, ratio, cap, free):
    amount, copay = domain.subsidy(price, ratio, cap, free)
    assert amount + copay == price and amount >= 0 and copay >= 0
    assert amount == min(price * ratio // 10000, cap, free)
    assert amount * 10000 <= price * ratio                       # rounding never favours the subsidy
    assert isinstance(amount, int) and isinstance(copay, int)


def test_subsidy_rounds_down_to_the_fen():
    assert domain.subsidy(1_500_001, 5000, 10**9, 10**9) == (750_000, 750_001)
    assert domain.subsidy(3, 3333, 10**9, 10**9) == (0, 3)
    assert domain.subsidy(2_000_000, 10000, 1_000_000, 10**9) == (1_000_000, 1_000_000)   # 玉环: full offset to a cap


def test_barred_and_unknown_catalogue_items_are_refused_with_the_reason():
    catalogue = [ITEM, dict(ITEM, service_code="PAT-02", barred_reason="CNIPA 2021: no filing agency fees")]
    assert domain.catalogue_item(catalogue, "PAT-01") is ITEM
    with pytest.raises(RuleRefused) as barred:
        domain.catalogue_item(catalogue, "PAT-02")
    assert barred.value.detail["rule"] == "barred_item" and "CNIPA 2021" in barred.value.message
    with pytest.raises(RuleRefused) as unknown:
        domain.catalogue_item(catalogue, "TM-01")
    assert unknown.value.detail["rule"] == "not_in_catalogue"


@pytest.mark.parametrize("change,enterprise,rule", [
    (None, "91350100M000100Y43", None),
    ({"kind": None}, "91350100M000100Y43", "agency_unknown"),
    ({"status": "suspended"}, "91350100M000100Y43", "agency_not_active"),
    ({"blacklist": {"from": "2026-05-01", "to": None}}, "91350100M000100Y43", "agency_blacklisted"),
    ({"blacklist": {"from": "2026-01-01", "to": "2026-05-31"}}, "91350100M000100Y43", None),   # over yesterday
    ({"blacklist": {"from": "2026-06-02", "to": None}}, "91350100M000100Y43", None),           # from tomorrow
    ({"eligible": False, "level": "C"}, "91350100M000100Y43", "agency_below_rating_line"),
    ({"kind": "trademark"}, "91350100M000100Y43", "agency_kind"),
    ({"kind": "both"}, "91350100M000100Y43", None),
    ({"service_codes": ["PAT-03"]}, "91350100M000100Y43", "agency_service_scope"),
    (None, "91330100MA2H00001P", "related_party"),                                              # itself
    (None, "91330100MA2H00002T", "related_party"),                                              # declared
])
def test_agency_eligibility_names_the_rule(change, enterprise, rule):
    agency = dict(AGENCY, **(change or {}))
    if rule is None:
        domain.check_agency(agency, ITEM, enterprise, TODAY)
        return
    with pytest.raises(RuleRefused) as refused:
        domain.check_agency(agency, ITEM, enterprise, TODAY)
    assert refused.value.detail["rule"] == rule


def test_an_unknown_agency_is_refused():
    with pytest.raises(RuleRefused):
        domain.check_agency(None, ITEM, "91350100M000100Y43", TODAY)


TIERS = [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000},
         {"tier": "innovative_sme", "face_value_fen": 1_000_000, "annual_cap_fen": 3_000_000}]


def q(tier, valid_from="2025-01-01", valid_to="2027-12-31", revoked_on=None):
    return {"tier": tier, "valid_from": valid_from, "valid_to": valid_to, "revoked_on": revoked_on}


def test_the_largest_held_tier_is_chosen_unless_one_is_asked_for():
    held = [q("innovative_sme"), q("srdi_sme")]
    assert domain.choose_tier(TIERS, held, TODAY)["tier"] == "srdi_sme"
    assert domain.choose_tier(TIERS, held, TODAY, "innovative_sme")["tier"] == "innovative_sme"
    with pytest.raises(RuleRefused) as refused:
        domain.choose_tier(TIERS, [q("little_giant")], TODAY)
    assert refused.value.detail["rule"] == "tier_not_held"


@pytest.mark.parametrize("qualification,valid", [
    (q("srdi_sme", valid_to="2026-06-01"), True),                 # its last day
    (q("srdi_sme", valid_to="2026-05-31"), False),
    (q("srdi_sme", valid_from="2026-06-02"), False),
    (q("srdi_sme", revoked_on="2026-06-02"), True),               # counts until the day before revocation
    (q("srdi_sme", revoked_on="2026-06-01"), False),
    ({"tier": "srdi_sme", "revoked_on": "2026-07-01"}, False),    # the revocation arrived before the grant
])
def test_qualification_validity_on_a_day(qualification, valid):
    assert domain.qualification_valid_on(qualification, TODAY) is valid


def test_transitions_name_the_current_state():
    assert domain.next_state("order", domain.ORDER_TRANSITIONS, "placed", "deliver") == "delivered"
    with pytest.raises(IllegalTransition) as illegal:
        domain.next_state("order", domain.ORDER_TRANSITIONS, "cancelled", "deliver")
    assert illegal.value.status == 409 and illegal.value.detail["state"] == "cancelled"


def test_terms_that_cannot_work_are_refused():
    terms = {"opens_on": "2026-01-01", "closes_on": "2026-12-31", "budget_fen": 1_500_000, "tiers": TIERS,
             "catalogue": [ITEM]}
    with pytest.raises(RuleRefused) as refused:
        domain.check_terms(terms)
    assert refused.value.detail["rule"] == "face_above_budget"
    with pytest.raises(RuleRefused) as refused:
        domain.check_terms(dict(terms, budget_fen=10**8, catalogue=[ITEM, ITEM]))
    assert refused.value.detail["rule"] == "duplicate_service_code"


def test_a_budget_cut_cannot_go_below_what_is_issued():
    programme = {"budget_fen": 10_000_000, "remaining_fen": 3_000_000}
    assert domain.budget_change(programme, 7_000_000) == -3_000_000
    with pytest.raises(RuleRefused):
        domain.budget_change(programme, 6_999_999)


@given(faces=st.lists(st.integers(1, 10**7), max_size=20), unwritten=st.integers(0, 20), budget_extra=st.integers(0, 10**8))
def test_reserved_but_unwritten_vouchers_count_as_free(faces, unwritten, budget_extra):
    written = faces[:max(0, len(faces) - unwritten)]
    issued = sum(faces)
    programme = {"_id": "p", "budget_fen": issued + budget_extra, "remaining_fen": budget_extra, "issued_fen": issued}
    sums = {"face_value_fen": sum(written), "free_fen": sum(written), "held_fen": 0, "paid_fen": 0, "returned_fen": 0}
    balance = domain.programme_balance(programme, sums)
    assert balance["budget_fen"] == sum(balance[b] for b in domain.BUCKETS)
    assert balance["free_fen"] == issued


def test_released_holds_go_back_to_a_live_voucher_only():
    assert domain.release_bucket("live") == ("free_fen", "voucher")
    assert domain.release_bucket("expired") == ("returned_fen", "programme")
    assert domain.release_bucket("revoked") == ("returned_fen", "programme")
