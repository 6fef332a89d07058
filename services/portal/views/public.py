"""Signed out: programmes with their catalogue and rules, the agency directory with credit levels and
why (measure 十一's publicity), and the 公示 of approved and paid subsidies with their ledger proofs."""
import json
import threading
import time

from flask import Blueprint, Response, abort, render_template

from services.audit import ledger
from services.portal.clients import ApiRefused
from services.portal.clients.audit import audit_api
from services.portal.clients.enterprises import enterprises_api
from services.portal.clients.providers import providers_api
from services.portal.clients.vouchers import vouchers_api
from services.portal.signin import as_reader

bp = Blueprint("public", __name__)
# Published lists change when an officer acts; a visitor may see them up to this late, and a crowd of
# visitors costs the API one read per worker per period instead of one per page view.
PUBLISHED_FOR_S = 30
_cache, _cache_lock = {}, threading.Lock()


def published(key, compute):
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (time.monotonic() + PUBLISHED_FOR_S, value)
    return value


@bp.route("/")
@as_reader
def programmes():
    items = published("programmes", lambda: [p for p in vouchers_api.get_programmes() if p["status"] != "draft"])
    return render_template("public/programmes.html", programmes=items)


@bp.route("/programmes/<programme_id>")
@as_reader
def programme(programme_id):
    found = vouchers_api.get_programme(programme_id)
    if found["status"] == "draft":
        abort(404)
    return render_template("public/programme.html", programme=found)


@bp.route("/agencies")
@as_reader
def agencies():
    items = published("agencies", lambda: sorted(providers_api.get_agencies(),
                                                 key=lambda a: (a["level"] is None, a["level"] or "", -(a["score"] or 0))))
    return render_template("public/agencies.html", agencies=items)


@bp.route("/agencies/<agency_id>")
@as_reader
def agency(agency_id):
    return render_template("public/agency.html", rating=providers_api.get_rating(agency_id))


def publicity_rows(programme_id):
    """Approved and paid subsidies of one programme, straight from the audit ledger (so each row is the
    entry it links to), with names from the registers."""
    def compute():
        placed = {e["event"]["data"]["order_id"]: e["event"]["data"] for e in audit_api.get_entries_of_type("order.placed")}
        rows = {}
        for kind in ("claim.approved", "claim.paid"):
            for entry in audit_api.get_entries_of_type(kind):
                data = entry["event"]["data"]
                if data["programme_id"] != programme_id:
                    continue
                order = placed.get(data["order_id"], {})
                rows[data["claim_id"]] = {
                    "claim_id": data["claim_id"], "enterprise_id": data["enterprise_id"], "agency_id": data["agency_id"],
                    "service_code": order.get("service_code"), "amount_fen": data["amount_fen"],
                    "state": kind.split(".")[1], "occurred_at": entry["event"]["occurred_at"],
                    "position": entry["position"]}
        return sorted(rows.values(), key=lambda r: r["occurred_at"], reverse=True)
    return published(f"publicity:{programme_id}", compute)


def names():
    return published("names", lambda: {
        "agencies": {a["agency_id"]: a["name"] for a in providers_api.get_agencies()},
        "enterprises": {e["enterprise_id"]: e["name"] for e in enterprises_api.get_enterprises()}})


@bp.route("/publicity")
@as_reader
def publicity_index():
    items = published("programmes", lambda: [p for p in vouchers_api.get_programmes() if p["status"] != "draft"])
    return render_template("public/publicity_index.html", programmes=items)


@bp.route("/publicity/<programme_id>")
@as_reader
def publicity(programme_id):
    found = vouchers_api.get_programme(programme_id)
    if found["status"] == "draft":
        abort(404)
    catalogue = {item["service_code"]: item["name"] for item in found["catalogue"]}
    return render_template("public/publicity.html", programme=found, rows=publicity_rows(programme_id),
                           names=names(), catalogue=catalogue)


def proof_bundle(position):
    """The entry, its inclusion proof in the latest signed checkpoint and the signing key, checked here with
    the same code the offline verifier uses; None when no checkpoint covers the entry yet."""
    try:
        answer = audit_api.get_inclusion_proof(position)
    except ApiRefused as exc:
        if exc.rule == "entry_after_checkpoint":
            return None
        raise
    key = audit_api.get_public_key()
    bundle = {"entry": answer["entry"], "proof": answer["proof"], "checkpoint": answer["checkpoint"],
              "public_key": key["public_key"], "key_id": key["key_id"]}
    bundle["checked"] = (ledger.inclusion_ok(answer["entry"]["event"], position, answer["proof"], answer["checkpoint"])
                         and ledger.checkpoint_signature_ok(answer["checkpoint"], key["public_key"]))
    return bundle


def published_entry(position):
    entry = audit_api.get_entry(position)
    if entry["type"] not in ("claim.approved", "claim.paid"):
        abort(404)  # the public sees the 公示 entries, not the whole ledger
    return entry


@bp.route("/ledger/<int:position>")
@as_reader
def ledger_entry(position):
    entry = published_entry(position)
    return render_template("public/ledger_entry.html", entry=entry, bundle=proof_bundle(position),
                           event_json=json.dumps(entry["event"], ensure_ascii=False, indent=2, sort_keys=True))


@bp.route("/ledger/<int:position>/proof.json")
@as_reader
def ledger_proof(position):
    published_entry(position)
    bundle = proof_bundle(position)
    if bundle is None:
        abort(404)
    bundle.pop("checked")
    return Response(json.dumps(bundle, ensure_ascii=False, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename=ipv-ledger-{position}-proof.json"})
