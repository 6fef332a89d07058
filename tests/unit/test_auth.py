from datetime import datetime, timedelta, timezone

import pytest

from ipvkit.auth import Principal, issue_token, principal_from_header
from ipvkit.errors import Unauthorized

SECRET = "s" * 48


def test_round_trip():
    token = issue_token(SECRET, "agency", "ag-1")
    assert principal_from_header(SECRET, f"Bearer {token}") == Principal("agency", "ag-1")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt"])
def test_missing_or_garbled(header):
    with pytest.raises(Unauthorized):
        principal_from_header(SECRET, header)


def test_other_secret_and_expired_tokens_are_refused():
    with pytest.raises(Unauthorized):
        principal_from_header(SECRET, "Bearer " + issue_token("x" * 48, "officer", "o1"))
    old = datetime.now(timezone.utc) - timedelta(days=2)
    with pytest.raises(Unauthorized, match="expired"):
        principal_from_header(SECRET, "Bearer " + issue_token(SECRET, "officer", "o1", now=old))


def test_unknown_roles_cannot_be_issued():
    with pytest.raises(ValueError):
        issue_token(SECRET, "admin", "root")
