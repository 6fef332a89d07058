"""An auditor's work: the ledger's state (verified, last checkpoint), fund use by month, region, tier,
service and agency with drill-down to the ledger entries, red flags with their evidence, reconciliation,
and the full ledger export for the offline verifier (a long export shows its progress)."""
import json
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from pymongo import MongoClient

from services.portal.clients.audit import audit_api
from services.portal.clients.providers import providers_api
from services.portal.clients.vouchers import vouchers_api
from services.portal.formatting import DIMENSIONS, MEASURES
from services.portal.signin import person_required

bp = Blueprint("auditor", __name__, url_prefix="/auditor")
FILTERS = ("programme", "region", "tier", "service_code", "agency", "month")


@bp.route("")
@person_required("auditor")
def home():
    checkpoints = audit_api.get_checkpoints().get("items", [])
    return render_template("auditor/home.html", head=audit_api.get_head(), verification=audit_api.verify_ledger(),
                           checkpoint=checkpoints[-1] if checkpoints else None)


@bp.route("/fund-use")
@person_required("auditor")
def fund_use():
    by = request.args.get("by", "month")
    if by not in DIMENSIONS:
        abort(404)
    filters = {k: request.args[k] for k in FILTERS if request.args.get(k)}
    report = audit_api.get_fund_use(by, **filters)
    # Agencies and programmes by name, not id (the filters and links keep the id).
    if by == "agency":
        labels = {a["agency_id"]: a["name"] for a in providers_api.get_agencies()}
    elif by == "programme":
        labels = {p["programme_id"]: p["name"] for p in vouchers_api.get_programmes()}
    else:
        labels = {}
    for row in report["rows"]:
        row["label"] = labels.get(row["key"], row["key"]) if row["key"] is not None else _("unknown")
    chart = {"keys": [str(r["label"]) for r in report["rows"]],
             "series": [{"name": str(MEASURES[m]), "values": [r[f"{m}_fen"] / 100 for r in report["rows"]]}
                        for m in ("issued", "held", "paid", "returned")]}
    return render_template("auditor/fund_use.html", report=report, by=by, filters=filters, chart=chart,
                           dimensions=DIMENSIONS, measures=("budget", "issued", "held", "paid", "returned"))


@bp.route("/fund-use/entries")
@person_required("auditor")
def fund_use_entries():
    measure = request.args.get("measure", "paid")
    if measure not in MEASURES:
        abort(404)
    filters = {k: request.args[k] for k in FILTERS if request.args.get(k)}
    page = audit_api.get_fund_use_entries(measure, after=request.args.get("after"), **filters)
    return render_template("auditor/fund_use_entries.html", page=page, measure=measure, filters=filters)


@bp.route("/entries/<int:position>")
@person_required("auditor")
def entry(position):
    found = audit_api.get_entry(position)
    return render_template("auditor/entry.html", entry=found,
                           event_json=json.dumps(found["event"], ensure_ascii=False, indent=2, sort_keys=True))


@bp.route("/anomalies")
@person_required("auditor")
def anomalies():
    return render_template("auditor/anomalies.html", anomalies=audit_api.get_anomalies())


@bp.route("/anomalies/<anomaly_id>")
@person_required("auditor")
def anomaly(anomaly_id):
    return render_template("auditor/anomaly.html", anomaly=audit_api.get_anomaly(anomaly_id))


@bp.route("/reconciliation")
@person_required("auditor")
def reconciliation():
    return render_template("auditor/reconciliation.html", result=audit_api.reconcile())


# -- exports -------------------------------------------------------------------------------------
def exports_collection():
    config = current_app.config
    return MongoClient(config["MONGO_URI"], tz_aware=True)[config["MONGO_DB"]]["exports"]


def exports_dir():
    folder = Path(current_app.config["EXPORTS_DIR"])
    folder = folder if folder.is_absolute() else Path(current_app.root_path).parents[1] / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_export(app, job_id, token, path):
    """Streams the ledger export into a file, counting lines into the job so its page shows progress."""
    with app.app_context():
        jobs = exports_collection()
        g.api_token = token
        try:
            upstream = audit_api.stream_export()
            lines = 0
            with open(path, "wb") as out:
                for line in upstream.iter_lines():
                    out.write(line + b"\n")
                    lines += 1
                    if lines % 500 == 0:
                        jobs.update_one({"_id": job_id}, {"$set": {"lines": lines}})
            jobs.update_one({"_id": job_id}, {"$set": {"lines": lines, "state": "done",
                                                       "finished_at": datetime.now(timezone.utc)}})
        except Exception as exc:  # the page says it failed; the log says why
            app.logger.exception("export %s failed", job_id)
            jobs.update_one({"_id": job_id}, {"$set": {"state": "failed", "error": type(exc).__name__}})


@bp.route("/exports", methods=["GET", "POST"])
@person_required("auditor")
def exports():
    jobs = exports_collection()
    if request.method == "POST":
        head = audit_api.get_head()
        job_id = uuid.uuid4().hex
        # key, head, checkpoints and one line per entry: the total is known to within the checkpoints
        jobs.insert_one({"_id": job_id, "owner": g.person["username"], "state": "running", "lines": 0,
                         "total": head["size"] + 2, "started_at": datetime.now(timezone.utc)})
        threading.Thread(target=run_export, daemon=True, name=f"export-{job_id}",
                         args=(current_app._get_current_object(), job_id, g.api_token,
                               exports_dir() / f"{job_id}.jsonl")).start()
        return redirect(url_for("auditor.export", job_id=job_id))
    mine = list(jobs.find({"owner": g.person["username"]}).sort("started_at", -1).limit(10))
    return render_template("auditor/exports.html", jobs=mine)


def own_job(job_id):
    job = exports_collection().find_one({"_id": job_id})
    if job is None or job["owner"] != g.person["username"]:
        abort(404)
    return job


@bp.route("/exports/<job_id>")
@person_required("auditor")
def export(job_id):
    job = own_job(job_id)
    template = "auditor/_export_progress.html" if request.headers.get("HX-Request") else "auditor/export.html"
    return render_template(template, job=job, percent=min(100, job["lines"] * 100 // max(job["total"], 1)))


@bp.route("/exports/<job_id>/ledger.jsonl")
@person_required("auditor")
def export_file(job_id):
    job = own_job(job_id)
    if job["state"] != "done":
        abort(404)
    return send_file(exports_dir() / f"{job_id}.jsonl", mimetype="application/x-ndjson", as_attachment=True,
                     download_name=f"ipv-ledger-{job['started_at']:%Y%m%d-%H%M%S}.jsonl")
