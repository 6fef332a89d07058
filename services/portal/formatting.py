"""How values read on a page: money in yuan with two decimals (the API's integer fen), times in the
portal's time zone (the API's UTC), names of tiers, states and levels in the person's language."""
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l

TIERS = {
    "innovative_sme": _l("Innovative SME"),
    "tech_innovative_sme": _l("Technology and innovation SME"),
    "srdi_sme": _l("Specialised and sophisticated SME"),
    "little_giant": _l("Little giant"),
}
STATES = {
    "draft": _l("draft"), "open": _l("open"), "closed": _l("closed"),
    "live": _l("live"), "expired": _l("expired"), "revoked": _l("revoked"),
    "placed": _l("placed"), "delivered": _l("delivered"), "confirmed": _l("confirmed"), "claimed": _l("claimed"),
    "disputed": _l("disputed"), "released": _l("released"), "cancelled": _l("cancelled"),
    "submitted": _l("submitted"), "approved": _l("approved"), "rejected": _l("rejected"), "paid": _l("paid"),
    "active": _l("active"), "suspended": _l("suspended"),
}
MODELS = {"agency_redeems": _l("the agency claims the subsidy"), "enterprise_pays": _l("the enterprise claims the subsidy")}
MEASURES = {"budget": _l("budget"), "issued": _l("issued"), "held": _l("held"), "paid": _l("paid"),
            "returned": _l("returned"), "remaining": _l("remaining"), "free": _l("free")}
DOCUMENT_KINDS = {"contract": _l("contract"), "invoice": _l("invoice"), "payment_proof": _l("proof of payment"),
                  "deliverable": _l("deliverable")}
DIMENSIONS = {"month": _l("month"), "region": _l("region"), "tier": _l("tier"), "service_code": _l("service"),
              "agency": _l("agency"), "programme": _l("programme")}


def yuan(fen):
    """12345 → '¥123.45'; exact (integer arithmetic, never a float)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def local_time(value, seconds=False):
    """A UTC ISO timestamp from the API → 'YYYY-MM-DD HH:MM' (with seconds: ':SS') in the portal's time zone."""
    if not value:
        return "—"
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return str(value)
    return moment.astimezone(ZoneInfo(current_app.config["TIMEZONE"])).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def named(value, table):
    return str(table.get(value, value)) if value is not None else "—"


def percent_bp(bp):
    return f"{bp / 100:g}%"


def register(app):
    app.jinja_env.filters.update(
        yuan=yuan, local_time=local_time, percent_bp=percent_bp,
        tier=lambda v: named(v, TIERS), state=lambda v: named(v, STATES), model=lambda v: named(v, MODELS),
        measure=lambda v: named(v, MEASURES), dimension=lambda v: named(v, DIMENSIONS),
        document_kind=lambda v: named(v, DOCUMENT_KINDS))
