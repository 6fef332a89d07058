"""Rules of programmes, vouchers, orders and claims. Data in, decisions out; no I/O.

Money is integer fen. Conservation, per voucher (one document, so it holds at every moment):
face_value = free + held + paid + returned; per programme: budget = remaining + issued, where
issued is the sum of the face values of its vouchers (those still being written count as free).
"""
from datetime import date, timedelta

from ipvkit.errors import IllegalTransition, RuleRefused

# -- state machines ---------------------------------------------------------------------------
PROGRAMME_TRANSITIONS = {
    "change": {"draft": "draft", "open": "open"},
    "open": {"draft": "open"},
    "close": {"open": "closed"},
}
VOUCHER_TRANSITIONS = {"expire": {"live": "expired"}, "revoke": {"live": "revoked"}}
ORDER_TRANSITIONS = {
    "cancel": {"placed": "cancelled"},
    "deliver": {"placed": "delivered"},
    "confirm": {"delivered": "confirmed"},
    "dispute": {"delivered": "disputed"},
    "resolve": {"disputed": None},          # upheld -> released, else confirmed
    "claim": {"confirmed": "claimed"},
}
CLAIM_TRANSITIONS = {"approve": {"submitted": "approved"}, "reject": {"submitted": "rejected"},
                     "pay": {"approved": "paid"}}
PROGRAMME_STATES = ("draft", "open", "closed")
VOUCHER_STATES = ("live", "expired", "revoked")
ORDER_STATES = ("placed", "delivered", "confirmed", "disputed", "cancelled", "released", "claimed")
CLAIM_STATES = ("submitted", "approved", "rejected", "paid")
PENDING_CLAIM_STATES = ("submitted", "approved")


def next_state(kind, table, current, action):
    """The state after `action`, or IllegalTransition (409) naming the current state."""
    if current not in table[action]:
        raise IllegalTransition(kind, current, action)
    return table[action][current]


# -- programmes -------------------------------------------------------------------------------
def check_terms(terms):
    """Raises RuleRefused for terms that are well-formed but inconsistent."""
    if terms["closes_on"] < terms["opens_on"]:
        raise RuleRefused("application_window", "closes_on is before opens_on")
    tiers = [t["tier"] for t in terms["tiers"]]
    if len(set(tiers)) != len(tiers):
        raise RuleRefused("duplicate_tier", "each tier may appear once")
    codes = [i["service_code"] for i in terms["catalogue"]]
    if len(set(codes)) != len(codes):
        raise RuleRefused("duplicate_service_code", "each catalogue service code may appear once")
    for t in terms["tiers"]:
        if t["face_value_fen"] > t["annual_cap_fen"]:
            raise RuleRefused("face_above_cap", f"{t['tier']}: face value is above the annual cap")
        if t["face_value_fen"] > terms["budget_fen"]:
            raise RuleRefused("face_above_budget", f"{t['tier']}: face value is above the whole budget")


def budget_change(programme, new_budget):
    """The change to `remaining` a new budget needs; refuses to cut below what is already issued."""
    delta = new_budget - programme["budget_fen"]
    if programme["remaining_fen"] + delta < 0:
        raise RuleRefused("budget_below_issued",
                          f"{programme['budget_fen'] - programme['remaining_fen']} fen are already issued")
    return delta


# -- issuance ---------------------------------------------------------------------------------
def check_window(programme, today):
    if programme["status"] != "open":
        raise IllegalTransition("programme", programme["status"], "apply to")
    if not programme["opens_on"] <= today.isoformat() <= programme["closes_on"]:
        raise RuleRefused("application_window", f"applications are taken from {programme['opens_on']} "
                          f"to {programme['closes_on']}; today is {today}")


def qualification_valid_on(q, day):
    """A qualification counts from valid_from through valid_to, up to the day before revocation."""
    if not q.get("valid_from"):
        return False  # only the revocation has arrived so far
    end = q["valid_to"]
    if q.get("revoked_on"):
        end = min(end, (date.fromisoformat(q["revoked_on"]) - timedelta(days=1)).isoformat())
    return q["valid_from"] <= day.isoformat() <= end


def choose_tier(programme_tiers, qualifications, today, wanted=None):
    """The tier terms an application is issued under: among the programme's tiers the enterprise
    holds today (or the one it asked for), the one with the largest face value."""
    held = {q["tier"] for q in qualifications if qualification_valid_on(q, today)}
    eligible = [t for t in programme_tiers if t["tier"] in held]
    if wanted is not None:
        eligible = [t for t in eligible if t["tier"] == wanted]
    if not eligible:
        tiers = ", ".join(t["tier"] for t in programme_tiers)
        # The qualifications here arrive by event from enterprises: one granted seconds ago may not yet.
        raise RuleRefused("tier_not_held", f"no qualification valid on {today} for "
                          + (wanted if wanted else f"any eligible tier ({tiers})")
                          + "; one recorded in the last moments may not have reached this service yet")
    return max(eligible, key=lambda t: (t["face_value_fen"], t["tier"]))


def validity(today, validity_days):
    return today, today + timedelta(days=validity_days - 1)


# -- orders -----------------------------------------------------------------------------------
def subsidy(price_fen, ratio_bp, item_cap_fen, free_fen):
    """min(price x ratio rounded down to the fen, item cap, free balance); the rest is co-payment."""
    amount = min(price_fen * ratio_bp // 10000, item_cap_fen, free_fen)
    return amount, price_fen - amount


def catalogue_item(catalogue, service_code):
    for item in catalogue:
        if item["service_code"] == service_code:
            if item.get("barred_reason"):
                raise RuleRefused("barred_item", f"{service_code} is barred from subsidy: {item['barred_reason']}")
            return item
    raise RuleRefused("not_in_catalogue", f"{service_code} is not in this voucher's catalogue")


def blacklisted_on(agency, day):
    listed = agency.get("blacklist")
    if not listed:
        return False
    return listed["from"] <= day.isoformat() and (listed["to"] is None or day.isoformat() <= listed["to"])


def check_agency(agency, item, enterprise_id, today):
    """Raises RuleRefused naming the first rule that bars this agency from this order today."""
    if agency is None or not agency.get("kind"):
        raise RuleRefused("agency_unknown", "no registered agency with this id")
    if agency.get("status", "active") != "active":
        raise RuleRefused("agency_not_active", f"the agency is {agency['status']}")
    if blacklisted_on(agency, today):
        raise RuleRefused("agency_blacklisted", "the agency is on a blacklist today")
    if not agency.get("eligible", False):
        raise RuleRefused("agency_below_rating_line",
                          f"the agency's credit level {agency.get('level') or 'unrated'} is below the line "
                          f"{agency.get('eligibility_line')}")
    if agency["kind"] != "both" and agency["kind"] not in item["agency_kinds"]:
        raise RuleRefused("agency_kind", f"{item['service_code']} needs a {' or '.join(item['agency_kinds'])} agency")
    if item["service_code"] not in agency.get("service_codes", ()):
        raise RuleRefused("agency_service_scope", f"the agency does not offer {item['service_code']}")
    if enterprise_id == agency.get("credit_code") or enterprise_id in agency.get("related_credit_codes", ()):
        raise RuleRefused("related_party", "the enterprise and the agency are related parties")


def delivery_documents(named, known, order_id, parties, evidence):
    """The documents a delivery names (`named`: kind -> document id), checked against what
    `document.uploaded` told this service (`known`: id -> its record), and the evidence to record.
    Each must exist, belong to this order, be of the kind it is named as, and have been uploaded by
    one of the order's `parties` ((role, id) of its enterprise and agency). A named deliverable's
    SHA-256 becomes the evidence's `deliverable_sha256` (a typed-in one must agree with it).
    Returns ([{kind, document_id, sha256}], evidence) or raises RuleRefused naming each problem."""
    problems = {}
    for kind, document_id in sorted(named.items()):
        doc = known.get(document_id)
        if doc is None:
            problems[kind] = [f"no document {document_id} is known here (an upload is known within seconds)"]
        elif doc["order_id"] != order_id or (doc["uploader_role"], doc["uploader_id"]) not in parties:
            # One answer for both: naming another order's documents must not tell whose they are.
            problems[kind] = [f"document {document_id} was not uploaded for this order by its enterprise or agency"]
        elif doc["kind"] != kind:
            problems[kind] = [f"document {document_id} was uploaded as {doc['kind']}, not {kind}"]
    evidence = dict(evidence)
    deliverable = known.get(named.get("deliverable"))
    if not problems and deliverable is not None:
        typed = evidence.get("deliverable_sha256")
        if typed and typed != deliverable["sha256"]:
            problems["deliverable"] = [f"deliverable_sha256 {typed} differs from the uploaded deliverable's "
                                       f"{deliverable['sha256']}"]
        evidence["deliverable_sha256"] = deliverable["sha256"]
    if not evidence.get("deliverable_sha256") and "deliverable" not in problems:
        problems["deliverable_sha256"] = ["give the deliverable's SHA-256, or name an uploaded deliverable"]
    if problems:
        raise RuleRefused("delivery_documents", "the delivery's documents cannot be accepted",
                          fields={f"documents.{k}" if k in named else k: v for k, v in problems.items()})
    documents = [{"kind": kind, "document_id": document_id, "sha256": known[document_id]["sha256"]}
                 for kind, document_id in sorted(named.items())]
    return documents, evidence


def payee(redemption_model, order):
    """企业兑付: the enterprise paid in full and is reimbursed; 机构兑付: the agency redeems."""
    if redemption_model == "enterprise_pays":
        return "enterprise", order["enterprise_id"]
    return "agency", order["agency_id"]


def release_bucket(voucher_status):
    """Where a released hold goes: back to the voucher while it is live, else to `returned`."""
    return ("free_fen", "voucher") if voucher_status == "live" else ("returned_fen", "programme")


def is_due_for_expiry(voucher, today):
    return voucher["status"] == "live" and voucher["valid_to"] < today.isoformat()


# -- conservation -----------------------------------------------------------------------------
BUCKETS = ("remaining_fen", "free_fen", "held_fen", "paid_fen", "returned_fen")


def programme_balance(programme, voucher_sums):
    """Buckets of a programme from its document and the sums over its vouchers issued up to the
    document's `issue_no`. Reserved face value not yet found among those vouchers (being written,
    or a crash left it to the sweeper) counts as free: it is issued and unspent."""
    in_flight = programme["issued_fen"] - voucher_sums.get("face_value_fen", 0)
    return {"programme_id": programme["_id"], "budget_fen": programme["budget_fen"],
            "remaining_fen": programme["remaining_fen"],
            "free_fen": voucher_sums.get("free_fen", 0) + in_flight,
            "held_fen": voucher_sums.get("held_fen", 0), "paid_fen": voucher_sums.get("paid_fen", 0),
            "returned_fen": voucher_sums.get("returned_fen", 0)}


def voucher_conserved(v):
    return v["face_value_fen"] == v["free_fen"] + v["held_fen"] + v["paid_fen"] + v["returned_fen"]
