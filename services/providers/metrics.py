"""Business gauge of the providers service: how many agencies stand at each level and status."""
from prometheus_client import Gauge

from ipvkit.contracts.provider import AGENCY_STATUSES, CREDIT_LEVELS
from services.providers.domain import UNRATED

AGENCIES = Gauge("ipv_agencies", "Agencies by credit level and status (blacklisted counts apart from its status)",
                 ["level", "status"])
LEVELS = CREDIT_LEVELS + (UNRATED,)
STATUSES = AGENCY_STATUSES + ("blacklisted",)


def set_agency_counts(counts):
    """`counts`: {(level, status): n}. Every pair is set, so a pair that emptied reads 0."""
    for level in LEVELS:
        for status in STATUSES:
            AGENCIES.labels(level, status).set(counts.get((level, status), 0))
