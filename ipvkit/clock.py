"""Time is UTC and injected, so expiry and validity can be tested at any date."""
from datetime import date, datetime, timedelta, timezone

from nameko.extensions import DependencyProvider


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def today(self) -> date:
        return self.now().date()


class FixedClock(SystemClock):
    """A clock tests set and move by hand."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self):
        return self.at

    def advance(self, **delta):
        self.at += timedelta(**delta)


class Clock(DependencyProvider):
    def setup(self):
        self.clock = SystemClock()

    def get_dependency(self, worker_ctx):
        return self.clock


def utc_iso(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision (what MongoDB stores)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_utc(moment: datetime) -> datetime:
    """pymongo returns naive datetimes that are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
