"""Which provider status changes alert enterprises with open orders (enterprises' inbox rules)."""
import pytest

from services.enterprises import domain


def status_changed(old, new):
    return {"type": "provider.status_changed", "data": {
        "agency_id": "ag-1", "agency_name": "闽江专利", "eligibility_line": "B", "eligible": new == "active",
        "affected_enterprises": [], "old_status": old, "new_status": new, "reason": "停业整顿"}}


@pytest.mark.parametrize("old,new,kind", [
    ("active", "suspended", "agency_suspended"),
    ("active", "cancelled", "agency_cancelled"),
    ("suspended", "cancelled", "agency_cancelled"),
    ("suspended", "active", None),                # a reinstatement needs no action
])
def test_suspension_and_cancellation_alert_but_reinstatement_does_not(old, new, kind):
    message = domain.standing_notification(status_changed(old, new))
    assert (message and message["kind"]) == kind
    if message:
        assert "闽江专利" in message["title"] and message["new_standing"] == f"status {new}"
