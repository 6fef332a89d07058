"""The one place benchmarks get a bearer token for (role, subject): the scheme changes here only."""
from ipvkit.auth import issue_token


def bearer(secret, role, subject):
    """The Authorization header value the services accept for this role and subject."""
    return "Bearer " + issue_token(secret, role, subject)
