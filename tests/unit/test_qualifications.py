"""Qualification validity on boundary dates, and the tier rules of a grant."""
from datetime import date

import pytest

from ipvkit.errors import IllegalTransition, RuleRefused
from services.enterprises import domain

Q = {"tier": "srdi_sme", "valid_from": "2025-01-01", "valid_to": "2027-12-31", "status": "active"}


@pytest.mark.parametrize("day,valid", [
    (date(2024, 12, 31), False),   # the day before it starts
    (date(2025, 1, 1), True),      # first day
    (date(2026, 6, 15), True),
    (date(2027, 12, 31), True),    # last day is included
    (date(2028, 1, 1), False),     # the day after
])
def test_validity_boundaries(day, valid):
    assert domain.is_valid_on(Q, day) is valid


def test_a_revoked_qualification_counts_until_the_day_before_revocation():
    q = dict(Q, status="revoked", revoked_on="2026-03-10")
    assert domain.is_valid_on(q, date(2026, 3, 9))
    assert not domain.is_valid_on(q, date(2026, 3, 10))
    assert domain.tiers_on([q, dict(Q, tier="little_giant", valid_from="2026-03-10")], date(2026, 3, 10)) == ["little_giant"]


def test_expiry_is_due_only_after_the_last_day():
    assert not domain.is_due_for_expiry(Q, date(2027, 12, 31))
    assert domain.is_due_for_expiry(Q, date(2028, 1, 1))
    assert not domain.is_due_for_expiry(dict(Q, status="revoked"), date(2028, 1, 1))


def test_three_years_is_the_longest_validity():
    domain.check_grant("srdi_sme", "provincial", date(2025, 1, 1), date(2027, 12, 31))
    with pytest.raises(RuleRefused) as refused:
        domain.check_grant("srdi_sme", "provincial", date(2025, 1, 1), date(2028, 1, 1))
    assert refused.value.detail["rule"] == "validity_length"


def test_three_years_from_29_february():
    domain.check_grant("srdi_sme", "provincial", date(2024, 2, 29), date(2027, 2, 27))
    with pytest.raises(RuleRefused):
        domain.check_grant("srdi_sme", "provincial", date(2024, 2, 29), date(2027, 2, 28))


def test_little_giants_are_certified_nationally():
    with pytest.raises(RuleRefused) as refused:
        domain.check_grant("little_giant", "provincial", date(2025, 1, 1), date(2027, 12, 31))
    assert refused.value.detail["rule"] == "tier_level"


def test_the_2026_revision_renames_the_bottom_tier_on_1_april():
    domain.check_grant("innovative_sme", "provincial", date(2026, 3, 31), date(2029, 3, 30))
    with pytest.raises(RuleRefused) as refused:
        domain.check_grant("innovative_sme", "provincial", date(2026, 4, 1), date(2029, 3, 31))
    assert refused.value.detail["rule"] == "tier_period"
    domain.check_grant("tech_innovative_sme", "provincial", date(2026, 4, 1), date(2029, 3, 31))
    with pytest.raises(RuleRefused):
        domain.check_grant("tech_innovative_sme", "provincial", date(2026, 3, 31), date(2029, 3, 30))


def test_revoking_twice_is_an_illegal_transition():
    with pytest.raises(IllegalTransition) as illegal:
        domain.check_revoke(dict(Q, status="revoked"), date(2026, 1, 1))
    assert illegal.value.status == 409 and illegal.value.detail["state"] == "revoked"


def test_only_enterprise_codes_can_register():
    assert domain.enterprise_code_problem("91350100M000100Y43") is None
    assert "91" in domain.enterprise_code_problem("92350100M000100Y43")
