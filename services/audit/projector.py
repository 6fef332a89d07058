"""Builds the read models from the ledger, one entry at a time in position order: dimensions
(what later events are grouped by), facts (reports, reconciliation) and red flags.

Applying an entry twice changes nothing (facts and flags have ids derived from the entry, the
tallies count a position once, the dimensions are overwritten with the same values in the same
order), so a crash between applying entries and moving the cursor is safe. One pod at a time
holds the cursor's lease, so rules see the ledger in its own order whatever pod appended what.
"""
import logging
import time
from datetime import timedelta

from ipvkit.clock import as_utc
from ipvkit.events import new_event
from services.audit import domain, metrics
from services.audit.storage import (AGENCIES, CAP_CLAIMS, ENTERPRISES, EVIDENCE, ORDERS, PROGRAMMES, SPLITS,
                                    TALLIES, VOUCHERS)

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
RUN_FOR = timedelta(seconds=5)
KEEP_MARGIN = 2 * RUN_FOR  # a kept lease is used only while a whole run fits well inside what is left of it
BATCH = 500
SAVE_EVERY = 20


def run(repo, now, thresholds, fresh=False):
    """Applies every entry not yet applied (up to BATCH per run). Returns how many it applied.
    Takes the lease only when there is work, and one run at a time per process: an append's nudge
    during a run is picked up by that run, which looks at the head again before it stops.
    After an append the head is known without a read; `fresh` reads it (the timer's runs), so
    what other pods appended (sign-ins, a takeover) is applied within a tick."""
    held = repo.held_position(now, KEEP_MARGIN)
    position = held if held is not None else repo.projector_position()
    if position >= repo.known_size(fresh) or not repo.store.projecting.acquire(blocking=False):
        return 0
    try:
        return _run(repo, now, thresholds, fresh)
    finally:
        repo.store.projecting.release()


def _run(repo, now, thresholds, fresh):
    """Applies entries SAVE_EVERY at a time: what they change is written, and the cursor moved,
    after each such chunk and when the run ends (an entry that fails to apply stops the run after
    the ones before it are saved); a crash re-applies at most a chunk, which changes nothing. A
    save that fails, or finds another pod took the cursor, ends the run with the cursor where it
    was. A run stops after RUN_FOR, well inside its lease, so two pods never build at once and
    what it raises is dated close to now. The run ends by keeping the lease (the same write as
    the cursor's), so while entries keep coming the next run in this process claims nothing; idle
    for a lease, it lapses, and a stopping service lets it go. A pod that applied entries another
    pod appended lets it go at once, so the cursor goes to the pod that appends."""
    position = repo.held_position(now, KEEP_MARGIN)
    if position is None:
        position = repo.claim_projector(now, LEASE)
    if position is None:
        return 0
    started = time.monotonic()
    applied, ends, size = 0, started + RUN_FOR.total_seconds(), repo.known_size(fresh)
    kept, more, own = True, True, False
    while kept and more:
        saved, facts, chunk = position, [], []
        while len(chunk) < SAVE_EVERY and applied + len(chunk) < BATCH and time.monotonic() < ends:
            following = position + len(chunk)
            if following >= size and following >= (size := repo.known_size(fresh)):
                break
            entry, own = repo.entry_to_project(following)
            if entry is None:  # counted by the head but gone: verification names it; nothing to build from
                break
            chunk.append(entry)
        more = len(chunk) == SAVE_EVERY
        try:
            repo.prefetch(key for entry in chunk for key in read_by(entry["event"]))
            for entry in chunk:
                at = now + timedelta(seconds=time.monotonic() - started)  # a flag's time
                facts += apply(repo, entry, at, thresholds)
                metrics.PROJECTION_LAG.observe(max((at - as_utc(entry["appended_at"])).total_seconds(), 0))
                position += 1
                applied += 1
        finally:
            kept = repo.save_projection(facts, now, saved, position, LEASE)
    if kept and applied and not own:   # the last entry was read back: another pod appends it
        repo.release_projector()       # its next nudge takes the cursor, and reads nothing back
    return applied


def read_by(event):
    """The dimensions and tallies that applying `event` reads, as far as its data names them: the
    run reads those of a chunk of entries at once instead of waiting on each in turn. A hint only:
    an event it cannot read names nothing, and `apply` says what is wrong with it."""
    try:
        return list(_read_by(event))
    except (KeyError, TypeError, AttributeError):
        return []


def _read_by(event):
    data, kind = event["data"], event["type"]
    for field, collection in (("programme_id", PROGRAMMES), ("voucher_id", VOUCHERS), ("order_id", ORDERS)):
        if field in data:
            yield collection, data[field]
    if kind == "order.placed":
        yield ENTERPRISES, data["enterprise_id"]
        yield AGENCIES, data["agency_id"]
        yield TALLIES, f"{SPLITS}:{_split_key(data)}"
    elif kind == "claim.submitted":
        for field in EVIDENCE_FIELDS:
            yield TALLIES, f"{EVIDENCE}:{field}:{_evidence_value(data, field)}"


def _split_key(data):
    return f"{data['enterprise_id']}|{data['agency_id']}|{data['service_code']}"


EVIDENCE_FIELDS = ("invoice_no", "deliverable_sha256")


def _evidence_value(data, field):
    return data[field].strip().upper() if field == "invoice_no" else data[field]


def apply(repo, entry, now, thresholds):
    """Applies one entry's dimensions, tallies and flags, and returns its facts. Flags are stored
    at once; facts, dimensions and tallies are written with those of the entries around it
    (`save_projection`)."""
    event = dict(entry["event"], _position=entry["position"])
    data, kind, position = event["data"], event["type"], entry["position"]
    programme = repo.dimension(PROGRAMMES, data["programme_id"]) if "programme_id" in data else {}
    voucher = repo.dimension(VOUCHERS, data["voucher_id"]) if "voucher_id" in data else {}
    order = repo.dimension(ORDERS, data["order_id"]) if "order_id" in data else {}
    facts = domain.facts_for(entry, programme, voucher, order)

    flags = []
    if kind in ("programme.created", "programme.changed"):
        repo.set_dimension(PROGRAMMES, data["programme_id"], {
            "region": data["region"], "budget_fen": data["budget_fen"],
            "caps": {item["service_code"]: item["item_cap_fen"] for item in data["catalogue"]}})
    elif kind == "enterprise.registered":
        repo.set_dimension(ENTERPRISES, data["enterprise_id"], {"region": data["region"]})
    elif kind == "voucher.issued":
        repo.set_dimension(VOUCHERS, data["voucher_id"], {"tier": data["tier"], "programme": data["programme_id"]})
    elif kind in ("provider.registered", "provider.profile_changed"):
        values = {"related": data["related_credit_codes"], "profile_position": position,
                  "profile_event_id": event["event_id"]}
        if kind == "provider.registered":
            values["credit_code"] = data["credit_code"]
        repo.set_dimension(AGENCIES, data["agency_id"], values)
    if kind.startswith("provider.") and (standing := domain.standing_of(event, position)) is not None:
        repo.set_dimension(AGENCIES, data["agency_id"], {"standing": standing})
    if kind == "order.placed":
        flags += _order_placed(repo, event, programme, thresholds)
    elif kind == "claim.submitted":
        flags += _claim_submitted(repo, event, programme, order, thresholds)

    for found in flags:
        if found is not None:
            raise_flag(repo, found, now)
    return facts


def _order_placed(repo, event, programme, thresholds):
    data, position = event["data"], event["_position"]
    enterprise = repo.dimension(ENTERPRISES, data["enterprise_id"])
    group = enterprise.get("region") or programme.get("region")
    repo.set_dimension(ORDERS, data["order_id"], {"agency": data["agency_id"], "service_code": data["service_code"]})
    agency = repo.dimension(AGENCIES, data["agency_id"])
    since = domain.window_start(event["occurred_at"], thresholds.split_window_days)
    _, same = repo.tally(SPLITS, _split_key(data), position, {
        "_id": data["order_id"], "enterprise": data["enterprise_id"], "agency": data["agency_id"],
        "service_code": data["service_code"], "programme": data["programme_id"], "subsidy_fen": data["subsidy_fen"],
        "occurred_at": event["occurred_at"], "position": position, "event_id": event["event_id"]}, recent=True)
    found = [
        domain.related_party(event, agency),
        domain.order_after_downgrade(event, agency),
        domain.split_orders([o for o in same if o["occurred_at"] >= since],
                            programme.get("caps", {}).get(data["service_code"]), thresholds),
    ]
    if group:
        total, of_agency, orders = repo.count_order(group, data["agency_id"], position, event["event_id"])
        evidence = orders + [{"position": position, "event_id": event["event_id"]}]  # the order that tipped it
        found.append(domain.concentration(group, data["agency_id"], total, of_agency, evidence, thresholds))
    return found


def _claim_submitted(repo, event, programme, order, thresholds):
    data, position = event["data"], event["_position"]
    found = []
    for kind in EVIDENCE_FIELDS:
        value = _evidence_value(data, kind)
        _, uses = repo.tally(EVIDENCE, f"{kind}:{value}", position, {
            "order_id": data["order_id"], "claim_id": data["claim_id"], "position": position,
            "event_id": event["event_id"]})
        found.append(domain.duplicate_evidence(event, kind, value, [u for u in uses if u["position"] < position]))
    cap = programme.get("caps", {}).get(data.get("service_code") or order.get("service_code"))
    if cap is not None and data["amount_fen"] == cap:
        count, claims = repo.tally(CAP_CLAIMS, f"{data['agency_id']}|{data['programme_id']}", position, {
            "claim_id": data["claim_id"], "agency": data["agency_id"], "programme": data["programme_id"],
            "position": position, "event_id": event["event_id"]})
        found.append(domain.claims_at_cap(claims, thresholds, count))
    return found


def raise_flag(repo, found, now):
    """Stores a red flag once and publishes it (`audit.anomaly_detected`) through the outbox."""
    data = {"anomaly_id": found["_id"], "rule": found["rule"], "summary": found["summary"],
            "subject": found["subject"], "evidence_event_ids": found["evidence_event_ids"],
            "ledger_positions": found["ledger_positions"]}
    event = new_event(type="audit.anomaly_detected", producer="audit", aggregate_id=found["_id"], sequence=1,
                      data=data, actor={"role": "system", "id": "audit"}, now=now)
    if repo.add_anomaly(dict(found, detected_at=now), event, now):
        metrics.ANOMALIES.labels(found["rule"]).inc()
        log.warning("red flag %s: %s", found["rule"], found["summary"])
