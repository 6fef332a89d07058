"""Pure rules of the audit service: which fund movements an event makes (the facts reports and
reconciliation add up), and the red-flag rules. Data in, decisions out; no I/O.

Conservation buckets (agreed for every programme):
    budget = remaining + free + held + paid + returned
Issue: remaining→free. Order: free→held. Release: held→free, or held→returned when the voucher
has expired or been revoked (`released_to`). Pay: held→paid. Expiry/revocation: free→returned.
A fact is one signed movement of one bucket; `count` moves the number of things in it (vouchers
live, holds open, claims paid, returns) so a report can say "how many" as well as "how much".
"""
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

BUCKETS = ("remaining", "free", "held", "paid", "returned")
REPORT_MEASURES = ("budget", "issued", "held", "paid", "returned")
RELEASES = ("order.cancelled", "claim.rejected", "order.dispute_resolved")


@dataclass(frozen=True)
class Thresholds:
    """Every red-flag threshold, from configuration (see config.yaml)."""
    split_window_days: int = 30
    split_min_orders: int = 2
    concentration_share_pct: int = 60
    concentration_min_orders: int = 10
    cap_claims_min: int = 3

    @classmethod
    def from_config(cls, config):
        return cls(**{name: int(config[key]) for name, key in (
            ("split_window_days", "AUDIT_SPLIT_WINDOW_DAYS"), ("split_min_orders", "AUDIT_SPLIT_MIN_ORDERS"),
            ("concentration_share_pct", "AUDIT_CONCENTRATION_SHARE_PCT"),
            ("concentration_min_orders", "AUDIT_CONCENTRATION_MIN_ORDERS"),
            ("cap_claims_min", "AUDIT_CAP_CLAIMS_MIN")) if config.get(key) not in (None, "")})


# -- facts -------------------------------------------------------------------------------------
def facts_for(entry, programme, voucher, order):
    """The bucket movements of one ledger entry. `programme`, `voucher` and `order` are what the
    ledger said about them before this entry ({} when unknown); this entry's own data wins."""
    event, position = entry["event"], entry["position"]
    data, kind = event["data"], event["type"]
    moves = []  # (bucket, fen, count)
    if kind == "programme.created":
        moves = [("budget", data["budget_fen"], 1), ("remaining", data["budget_fen"], 0)]
    elif kind == "programme.changed" and data["budget_fen"] != programme.get("budget_fen", data["budget_fen"]):
        delta = data["budget_fen"] - programme["budget_fen"]
        moves = [("budget", delta, 0), ("remaining", delta, 0)]
    elif kind == "voucher.issued":
        face = data["face_value_fen"]
        moves = [("issued", face, 1), ("remaining", -face, 0), ("free", face, 1)]
    elif kind == "order.placed":
        moves = [("free", -data["subsidy_fen"], 0), ("held", data["subsidy_fen"], 1)]
    elif kind in RELEASES and data.get("released_fen"):
        target = "returned" if data["released_to"] == "programme" else "free"
        moves = [("held", -data["released_fen"], -1), (target, data["released_fen"], 1 if target == "returned" else 0)]
    elif kind == "claim.paid":
        moves = [("held", -data["amount_fen"], -1), ("paid", data["amount_fen"], 1)]
    elif kind in ("voucher.expired", "voucher.revoked"):
        moves = [("free", -data["returned_fen"], -1), ("returned", data["returned_fen"], 1)]
    if not moves:
        return []
    dims = {
        "programme": data.get("programme_id"),
        "region": programme.get("region", data.get("region") if kind == "programme.created" else None),
        "tier": data.get("tier") or voucher.get("tier"),
        "service_code": data.get("service_code") or order.get("service_code"),
        "agency": data.get("agency_id") or order.get("agency"),
        "month": event["occurred_at"][:7],
        "voucher": data.get("voucher_id"),
    }
    return [dict(dims, _id=f"{position:012d}.{i}", position=position, event_id=event["event_id"], type=kind,
                 bucket=bucket, fen=fen, count=count)
            for i, (bucket, fen, count) in enumerate(moves) if fen or count]


def sum_facts(facts, by):
    """{key: {measure: {"fen", "count"}}} over facts, grouped by the dimension `by`."""
    rows = {}
    for fact in facts:
        row = rows.setdefault(fact.get(by), {})
        cell = row.setdefault(fact["bucket"], {"fen": 0, "count": 0})
        cell["fen"] += fact["fen"]
        cell["count"] += fact["count"]
    return rows


def report_rows(sums, measures=REPORT_MEASURES):
    """Flat rows, one per group key, sorted with unknown (None) last."""
    rows = []
    for key in sorted(sums, key=lambda k: (k is None, str(k))):
        row = {"key": key}
        for measure in measures:
            cell = sums[key].get(measure, {"fen": 0, "count": 0})
            row[f"{measure}_fen"], row[f"{measure}_count"] = cell["fen"], cell["count"]
        rows.append(row)
    return rows


def balances(sums):
    """Bucket balances (fen) per key from summed facts, the budget with them."""
    return {key: {bucket: cells.get(bucket, {"fen": 0})["fen"] for bucket in ("budget",) + BUCKETS}
            for key, cells in sums.items()}


def differences(ours, theirs, fields):
    """{field: {"ledger": .., "service": ..}} for each field that disagrees."""
    return {f: {"ledger": ours.get(f), "service": theirs.get(f)} for f in fields if ours.get(f) != theirs.get(f)}


# -- red flags -------------------------------------------------------------------------------------
def anomaly_id(rule, *key):
    return "an-" + hashlib.sha256("|".join((rule,) + tuple(str(k) for k in key)).encode()).hexdigest()[:24]


def flag(rule, key, summary, subject, evidence):
    """evidence: [(position, event_id)] in ledger order, deduplicated."""
    seen = sorted(set(evidence))[:1000]
    return {"_id": anomaly_id(rule, *key), "rule": rule, "summary": summary[:1000], "subject": subject,
            "ledger_positions": [p for p, _ in seen], "evidence_event_ids": [e for _, e in seen]}


def duplicate_evidence(claim, kind, value, earlier_uses):
    """The same invoice number or deliverable hash on claims for different orders (a repeated
    claim for the same order after a rejection is not a duplicate)."""
    others = [u for u in earlier_uses if u["order_id"] != claim["data"]["order_id"]]
    if not others:
        return None
    data = claim["data"]
    label = "invoice number" if kind == "invoice_no" else "deliverable (SHA-256)"
    return flag("duplicate_evidence", (kind, value, data["order_id"]),
                f"{label} {value} of claim {data['claim_id']} was already claimed for order(s) "
                + ", ".join(sorted({u["order_id"] for u in others})),
                {"agency_id": data["agency_id"], "enterprise_id": data["enterprise_id"],
                 "programme_id": data["programme_id"], "claim_id": data["claim_id"]},
                [(u["position"], u["event_id"]) for u in others] + [(claim["_position"], claim["event_id"])])


def split_orders(orders, cap_fen, thresholds):
    """Orders of one enterprise with one agency for one catalogue item within the window, each
    under the item's subsidy cap but together over it: one service split to dodge the cap.
    `orders` are the candidates in ledger order, the new one last."""
    if cap_fen is None:
        return None
    under = [o for o in orders if o["subsidy_fen"] < cap_fen]
    if len(under) < thresholds.split_min_orders or sum(o["subsidy_fen"] for o in under) <= cap_fen:
        return None
    first, last = under[0], under[-1]
    return flag("split_orders", (first["enterprise"], first["agency"], first["service_code"], first["_id"]),
                f"{len(under)} orders for {first['service_code']} with agency {first['agency']} within "
                f"{thresholds.split_window_days} days, each under the {cap_fen} fen cap, "
                f"{sum(o['subsidy_fen'] for o in under)} fen in all",
                {"enterprise_id": first["enterprise"], "agency_id": first["agency"],
                 "programme_id": last["programme"], "service_code": first["service_code"]},
                [(o["position"], o["event_id"]) for o in under])


def related_party(order_event, agency):
    """The enterprise is the agency itself or one of its declared affiliates."""
    data = order_event["data"]
    enterprise = data["enterprise_id"]
    if enterprise != agency.get("credit_code") and enterprise not in agency.get("related", []):
        return None
    evidence = [(order_event["_position"], order_event["event_id"])]
    if agency.get("profile_position") is not None:
        evidence.append((agency["profile_position"], agency["profile_event_id"]))
    return flag("related_party", (data["order_id"],),
                f"order {data['order_id']}: enterprise {enterprise} is related to agency {data['agency_id']}",
                {"enterprise_id": enterprise, "agency_id": data["agency_id"], "programme_id": data["programme_id"],
                 "order_id": data["order_id"]}, evidence)


def order_after_downgrade(order_event, agency):
    """An order placed on or after the agency fell below the voucher line, was blacklisted,
    suspended or cancelled (by the standing the ledger recorded before the order)."""
    standing = agency.get("standing")
    if not standing or standing["eligible"] or standing["occurred_at"] > order_event["occurred_at"]:
        return None
    data = order_event["data"]
    return flag("order_after_downgrade", (data["order_id"],),
                f"order {data['order_id']} placed with agency {data['agency_id']} after it became ineligible "
                f"({standing['what']}, {standing['occurred_at']})",
                {"enterprise_id": data["enterprise_id"], "agency_id": data["agency_id"],
                 "programme_id": data["programme_id"], "order_id": data["order_id"]},
                [(standing["position"], standing["event_id"]), (order_event["_position"], order_event["event_id"])])


def standing_of(event, position):
    """The agency standing a provider event leaves behind, or None if it says nothing about it."""
    data = event["data"]
    kind = event["type"]
    if kind == "provider.rating_changed":
        what = f"rated {data['new_level']}, line {data['eligibility_line']}"
    elif kind == "provider.blacklisted":
        what = f"blacklisted: {data['reason']}"
    elif kind == "provider.status_changed":
        what = f"{data['new_status']}: {data['reason']}"
    elif kind == "provider.blacklist_lifted":
        what = "blacklist lifted"
    elif kind == "provider.registered":
        what = f"registered at level {data['level']}"
    else:
        return None
    return {"eligible": data["eligible"], "what": what, "occurred_at": event["occurred_at"], "position": position,
            "event_id": event["event_id"]}


def concentration(group, agency_id, total, of_agency, orders, thresholds):
    """One agency holding an unusual share of the voucher orders of one enterprise group (the
    enterprises of one region)."""
    if total < thresholds.concentration_min_orders or of_agency * 100 < thresholds.concentration_share_pct * total:
        return None
    return flag("agency_concentration", (group, agency_id),
                f"agency {agency_id} took {of_agency} of {total} voucher orders of region {group} "
                f"({of_agency * 100 // total}% >= {thresholds.concentration_share_pct}%)",
                {"agency_id": agency_id, "region": group},
                [(o["position"], o["event_id"]) for o in orders])


def claims_at_cap(claims, thresholds, count=None):
    """An agency claiming exactly the item cap again and again in one programme. `claims`: the
    first of them (evidence); `count`: how many in all (default: as many as `claims`)."""
    count = len(claims) if count is None else count
    if count < thresholds.cap_claims_min:
        return None
    first = claims[0]
    return flag("claims_at_cap", (first["agency"], first["programme"]),
                f"agency {first['agency']} claimed exactly the item cap {count} times in programme "
                f"{first['programme']}",
                {"agency_id": first["agency"], "programme_id": first["programme"]},
                [(c["position"], c["event_id"]) for c in claims])


def ledger_tampered(problems, event_ids, head_size):
    """The red flag for a ledger that failed the check before a checkpoint was signed: every
    position named, the events still stored at them (`event_ids`: position -> event id)."""
    positions = sorted({p["position"] for p in problems})
    named = "; ".join(f"{p['kind']} at {p['position']}" for p in problems)
    return {"_id": anomaly_id("ledger_tampered", named), "rule": "ledger_tampered",  # the same damage: one flag
            "summary": f"the ledger of {head_size} entries failed verification, no checkpoint signed: {named}"[:1000],
            "subject": {"head_size": head_size}, "ledger_positions": positions[:1000],
            "evidence_event_ids": [event_ids[p] for p in positions if p in event_ids][:1000]}


def window_start(occurred_at_iso, days):
    moment = datetime.fromisoformat(occurred_at_iso.replace("Z", "+00:00"))
    return (moment - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
