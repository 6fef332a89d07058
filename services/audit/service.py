"""The audit service: entrypoints only. The ledger's cryptography is in ledger.py, the read
models in projector.py, the rules in domain.py, storage in storage.py."""
import csv
import io
import json
import logging
from datetime import datetime

from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy
from nameko.timer import timer
from pymerkle import InvalidChallenge
from werkzeug.wrappers import Response

from ipvkit import contracts  # noqa: F401 - registers every event schema
from ipvkit.clock import Clock, utc_iso
from ipvkit.consumer import consume
from ipvkit.errors import ApiError, BadRequest, NotFound, RuleRefused, Unavailable
from ipvkit.events import new_event
from ipvkit.http import ServiceBase, api
from ipvkit.realm_admin import Realm
from ipvkit.rpc import ask as rpc_ask, rpc
from services.audit import domain, identity, ledger, metrics, projector
from services.audit import schemas as s
from services.audit.keys import SigningKey
from services.audit.storage import AuditStore

log = logging.getLogger(__name__)

NAME = "audit"
READERS = ("auditor", "officer")
PRODUCERS = ("enterprises", "providers", "vouchers", "documents", "audit")
BUCKET_FIELDS = ("budget", "remaining", "free", "held", "paid", "returned")
VOUCHER_FIELDS = ("face_value", "free", "held", "paid", "returned")


def entry_view(doc):
    return {"position": doc["position"], "event_id": doc["event_id"], "type": doc["type"], "event": doc["event"],
            "prev_hash": doc["prev_hash"], "hash": doc["hash"], "appended_at": utc_iso(doc["appended_at"])}


def checkpoint_view(doc):
    return {k: doc[k] for k in ("size", "root_hash", "chain_hash", "signed_at", "key_id", "signature")}


def anomaly_view(doc):
    view = {k: doc[k] for k in ("rule", "summary", "subject", "evidence_event_ids", "ledger_positions")}
    view.update(anomaly_id=doc["_id"], detected_at=utc_iso(doc["detected_at"]))
    return view


def csv_response(rows, columns, filename):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(out.getvalue(), status=200, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def number(path, name):
    """A ledger position or checkpoint size from the path (a string route, so that auth is
    checked before the value: a bad token is a 401 whatever the path says)."""
    value = path[name]
    if not (value.isascii() and value.isdigit()) or len(value) > 12:  # "¹".isdigit(), and int() refuses it
        raise BadRequest(f"{name} must be a non-negative integer", fields={name: ["not a non-negative integer"]})
    return int(value)


def fact_filter(query):
    return {k: query[k] for k in ("programme", "region", "tier", "service_code", "agency", "month") if k in query}


class AuditService(ServiceBase):
    name = NAME
    store = AuditStore()
    clock = Clock()
    signer = SigningKey()
    vouchers = RpcProxy("vouchers")
    config = Config()
    realm = Realm()

    @property
    def thresholds(self):
        return domain.Thresholds.from_config(self.config)

    # -- the ledger ----------------------------------------------------------------------------
    # One pod appends at a time (the broker's single active consumer): the ledger is one hash chain, and
    # pods taking events from one queue in turn raced for its head (a third more writes and twice the reads
    # per entry, bench/README.md) and wrote a producer's events out of their queue order. The others stand by.
    @consume([(producer, "#") for producer in PRODUCERS], single_active=True)
    def record(self, event):
        """Appends every event of every service, once, then brings the read models up to date."""
        return self._append(event)

    def _append(self, event):
        now = self.clock.now()
        entry, appended = self.store.append(event, now)
        if appended:
            metrics.LEDGER_ENTRIES.set(entry["position"] + 1)
            occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
            metrics.LAG.observe(max((now - occurred).total_seconds(), 0))
        projector.run(self.store, now, self.thresholds)
        return entry["position"]

    @rpc
    def ledger_entry(self, event_id):
        """The ledger entry recording one event (its position, hashes and the event as recorded),
        or None: the documents service compares a file's SHA-256 with what `order.delivered` put here."""
        doc = self.store.entry_by_event(str(event_id))
        return entry_view(doc) if doc else None

    @timer(interval=5)
    def record_sign_ins(self):
        """Sign-in events (success, failure, lockout, sign-out) and account and role changes, from Keycloak
        into the ledger, each once. Without the tooling client (IDENTITY_CLIENT_SECRET) there is nothing
        to read; with Keycloak away, the next tick reads what this one missed."""
        if self.realm is None:
            return 0
        try:
            return identity.collect(self.realm, self.store, self._append,
                                    int(self.config.get("AUDIT_IDENTITY_SINCE_MS") or 0))
        except ApiError as exc:
            log.warning("sign-in events not read this time: %s", exc.message)
            return 0

    @timer(interval=1)
    def project(self):
        """Catches up entries a busy or crashed projector left (the append nudges it first)."""
        return projector.run(self.store, self.clock.now(), self.thresholds, fresh=True)

    @timer(interval=15)
    def refresh_metrics(self):
        size = self.store.head()["size"]
        metrics.LEDGER_ENTRIES.set(size)
        metrics.PROJECTOR_BEHIND.set(max(size - self.store.projector_position(), 0))

    @api("GET", "/api/v1/audit/head", roles=READERS, response=s.HeadOut, summary="How many entries the ledger holds, and the last hash")
    def head(self, call):
        head = self.store.head()
        return {"size": head["size"], "hash": head["hash"], "projected": self.store.projector_position()}

    @api("GET", "/api/v1/audit/entries", roles=READERS, query=s.EntriesQuery, response=s.EntryPage, summary="Ledger entries in order")
    def list_entries(self, call):
        query = call.query
        if "event_id" in query:
            doc = self.store.entry_by_event(str(query["event_id"]))
            return {"items": [entry_view(doc)] if doc else [], "next_cursor": None}
        docs = self.store.entries(query["after"], query["limit"], query.get("type"))
        return {"items": [entry_view(d) for d in docs],
                "next_cursor": docs[-1]["position"] if len(docs) == query["limit"] else None}

    @api("GET", "/api/v1/audit/entries/<position>", roles=READERS, response=s.EntryOut, summary="One ledger entry")
    def get_entry(self, call):
        return entry_view(self._entry(number(call.path, "position")))

    def _entry(self, position):
        doc = self.store.entry(position)
        if doc is None:
            raise NotFound(f"no ledger entry at position {position}")
        return doc

    @api("GET", "/api/v1/audit/verify", roles=READERS, response=s.VerifyOut, summary="Verify the whole ledger against its hashes and checkpoints")
    def verify(self, call):
        head = self.store.head()
        entries = [{"position": e["position"], "event": e["event"], "prev_hash": e["prev_hash"], "hash": e["hash"]}
                   for e in self.store.iter_entries()]
        checkpoints = [checkpoint_view(c) for c in self.store.checkpoints(limit=10_000)]
        _, problems = ledger.verify(entries, checkpoints, self.signer.public_pem, head_size=head["size"],
                                    head_hash=head["hash"])
        return {"ok": not problems, "entries": len(entries), "head_size": head["size"],
                "checkpoints": len(checkpoints), "problems": problems}

    @api("GET", "/api/v1/audit/export", roles=READERS, other_types=("application/x-ndjson",),
         summary="The ledger as JSON lines (key, checkpoints, entries) for the offline verifier")
    def export(self, call):
        store, public_pem = self.store, self.signer.public_pem
        head = store.head()

        def lines():
            yield json.dumps({"kind": "key", "public_key": public_pem}) + "\n"
            yield json.dumps({"kind": "head", "size": head["size"], "hash": head["hash"]}) + "\n"
            for cp in store.checkpoints(limit=10_000):
                yield json.dumps(dict(checkpoint_view(cp), kind="checkpoint")) + "\n"
            for e in store.iter_entries():
                yield json.dumps({"kind": "entry", "position": e["position"], "event": e["event"],
                                  "prev_hash": e["prev_hash"], "hash": e["hash"]}, ensure_ascii=False) + "\n"
        return Response(lines(), status=200, mimetype="application/x-ndjson",
                        headers={"Content-Disposition": 'attachment; filename="audit-ledger.jsonl"'})

    # -- checkpoints and proofs ------------------------------------------------------------------
    @api("GET", "/api/v1/audit/public-key", roles=READERS, response=s.PublicKeyOut, summary="The checkpoint signing key (PEM)")
    def public_key(self, call):
        return {"key_id": self.signer.key_id, "algorithm": "Ed25519", "public_key": self.signer.public_pem}

    @api("POST", "/api/v1/audit/checkpoints", roles=("officer", "ops"), status=201, response=s.CheckpointOut,
         summary="Sign a checkpoint over the entries so far now")
    def create_checkpoint(self, call):
        checkpoint = self._checkpoint()
        if checkpoint is None:
            raise RuleRefused("ledger_empty", "the ledger has no entries to checkpoint")
        return 201, checkpoint

    @timer(interval=10)
    def periodic_checkpoint(self):
        """Every AUDIT_CHECKPOINT_EVERY_S, if the ledger grew (and verifies)."""
        latest = self.store.latest_checkpoint()
        every = int(self.config.get("AUDIT_CHECKPOINT_EVERY_S") or 300)
        if latest is None or (self.clock.now() - datetime.fromisoformat(
                latest["signed_at"].replace("Z", "+00:00"))).total_seconds() >= every:
            if latest is None or self.store.head()["size"] > latest["size"]:
                try:
                    return self._checkpoint()
                except RuleRefused:  # the anomaly and the metric say it; tried again next time
                    return None
        return None

    def _checkpoint(self):
        head = self.store.repair_head()
        if head["size"] == 0:
            return None
        existing = self.store.checkpoint(head["size"])
        if existing is not None:
            return checkpoint_view(existing)
        leaves, problems, event_ids = self._verified_leaves(head)
        metrics.LEDGER_PROBLEMS.set(len(problems))
        if problems:
            projector.raise_flag(self.store, domain.ledger_tampered(problems, event_ids, head["size"]),
                                 self.clock.now())
            raise RuleRefused("ledger_damaged", f"the ledger does not verify ({len(problems)} problem(s)): no "
                                                "checkpoint is signed over it", problems=problems[:100])
        now = self.clock.now()
        signed = self.signer.sign(head["size"], ledger.merkle_root(leaves), head["hash"], utc_iso(now))
        event = new_event(type="audit.checkpoint_published", producer=NAME, aggregate_id=f"checkpoint-{head['size']}",
                          sequence=1, data=signed, actor={"role": "system", "id": NAME}, now=now)
        self.store.add_checkpoint(signed, event, now)
        return signed

    def _verified_leaves(self, head):
        """The Merkle leaves of the whole ledger, recomputed from the entries' content, and the
        problems found on the way (a checkpoint is signed only when there are none), with the event
        id at each position checked. From the latest checkpoint on when it still holds (its signature
        verifies and the stored leaves before it give its root: an RFC 9162 consistency check), so
        only the entries since then are read whole; otherwise the whole ledger."""
        latest = self.store.latest_checkpoint()
        prefix, after, checkpoints = [], None, []
        if latest is not None:
            prefix = self.store.leaves(latest["size"])
            if (ledger.checkpoint_signature_ok(checkpoint_view(latest), self.signer.public_pem)
                    and len(prefix) == latest["size"] and ledger.merkle_root(prefix) == latest["root_hash"]):
                after = (latest["size"], latest["chain_hash"])
            else:
                prefix, checkpoints = [], [checkpoint_view(c) for c in self.store.checkpoints(limit=10_000)]
        entries = list(self.store.entries_between(after[0] if after else 0, head["size"]))
        leaves, problems = ledger.verify(entries, checkpoints, self.signer.public_pem, head_size=head["size"],
                                         head_hash=head["hash"], after=after)
        named = {(p["kind"], p["position"]) for p in problems}
        for entry, leaf in zip(entries, leaves):
            if entry.get("leaf") != leaf.hex() and ("modified", entry["position"]) not in named:
                problems.append({"kind": "modified", "position": entry["position"],
                                 "detail": "the stored Merkle leaf does not match the entry's content"})
        problems.sort(key=lambda p: (p["position"], p["kind"]))
        return prefix + leaves, problems, {e["position"]: e["event_id"] for e in entries}

    @api("GET", "/api/v1/audit/checkpoints", roles=READERS, query=s.PageQuery, response=s.CheckpointPage, summary="Signed checkpoints")
    def list_checkpoints(self, call):
        docs = self.store.checkpoints(call.query["after"], call.query["limit"])
        return {"items": [checkpoint_view(d) for d in docs],
                "next_cursor": docs[-1]["_id"] if len(docs) == call.query["limit"] else None}

    def _checkpoint_at(self, size):
        doc = self.store.checkpoint(size) if size is not None else self.store.latest_checkpoint()
        if doc is None:
            raise NotFound(f"no checkpoint of size {size}" if size is not None else "no checkpoint yet")
        return doc

    @api("GET", "/api/v1/audit/checkpoints/<size>", roles=READERS, response=s.CheckpointOut, summary="One checkpoint")
    def get_checkpoint(self, call):
        return checkpoint_view(self._checkpoint_at(number(call.path, "size")))

    @api("GET", "/api/v1/audit/entries/<position>/proof", roles=READERS, query=s.ProofQuery, response=s.InclusionOut,
         summary="Inclusion proof of an entry in a checkpoint (RFC 9162)")
    def inclusion_proof(self, call):
        position = number(call.path, "position")
        entry = self._entry(position)
        size = call.query.get("checkpoint")
        if size is None and self.store.latest_checkpoint() is None:
            # A new ledger before its first checkpoint: the entry is simply not in one yet, as below.
            raise RuleRefused("entry_after_checkpoint", f"entry {position} awaits the ledger's first checkpoint")
        checkpoint = self._checkpoint_at(size)
        if position >= checkpoint["_id"]:
            raise RuleRefused("entry_after_checkpoint",
                              f"entry {position} is not in the checkpoint of size {checkpoint['_id']}")
        tree = ledger.LeafTree.from_leaves(self.store.leaves(checkpoint["_id"]))
        proof = tree.prove_inclusion(position + 1, checkpoint["_id"])
        return {"entry": entry_view(entry), "checkpoint": checkpoint_view(checkpoint), "proof": proof.serialize()}

    @api("GET", "/api/v1/audit/checkpoints/<size>/consistency", roles=READERS, query=s.ConsistencyQuery,
         response=s.ConsistencyOut,
         summary="Consistency proof from one checkpoint to a later one (RFC 9162)")
    def consistency_proof(self, call):
        older = self._checkpoint_at(number(call.path, "size"))
        newer = self._checkpoint_at(call.query.get("to"))
        if newer["_id"] < older["_id"]:
            raise RuleRefused("checkpoints_out_of_order",
                              f"checkpoint {newer['_id']} is older than checkpoint {older['_id']}")
        tree = ledger.LeafTree.from_leaves(self.store.leaves(newer["_id"]))
        try:
            proof = tree.prove_consistency(older["_id"], newer["_id"]).serialize()
        except InvalidChallenge as exc:
            raise RuleRefused("ledger_damaged", f"no consistency proof: {exc}")
        return {"older": checkpoint_view(older), "newer": checkpoint_view(newer), "proof": proof}

    # -- reports -----------------------------------------------------------------------------------
    @api("GET", "/api/v1/audit/reports/fund-use", roles=READERS, query=s.ReportQuery, response=s.ReportOut,
         other_types=("text/csv",),
         summary="Fund use grouped by programme, region, tier, service_code, agency or month")
    def fund_use(self, call):
        query = call.query
        match = fact_filter(query)
        sums = domain.sum_facts(self.store.facts(match, fields=(query["by"], "bucket", "fen", "count")), query["by"])
        rows = domain.report_rows(sums)
        for row in rows:
            row["drilldown"] = {"by": query["by"], "key": row["key"], "filters": dict(match)}
        if query["format"] == "csv":
            columns = ["key"] + [f"{m}_{unit}" for m in domain.REPORT_MEASURES for unit in ("fen", "count")]
            return csv_response(rows, columns, f"fund-use-by-{query['by']}.csv")
        return {"by": query["by"], "filters": match, "rows": rows,
                "through_position": self.store.projector_position() - 1}

    @api("GET", "/api/v1/audit/reports/fund-use/entries", roles=READERS, query=s.DrilldownQuery,
         response=s.DrilldownOut, other_types=("text/csv",),
         summary="The ledger entries behind a report figure")
    def fund_use_entries(self, call):
        query = call.query
        match = dict(fact_filter(query), bucket=query["measure"])
        if "after" in query:
            match["_id"] = {"$gt": query["after"]}
        facts = list(self.store.facts(match).limit(query["limit"]))
        items = [{"position": f["position"], "event_id": f["event_id"], "type": f["type"], "fen": f["fen"],
                  "count": f["count"], "voucher": f["voucher"], "cursor": f["_id"]} for f in facts]
        if query["format"] == "csv":
            return csv_response(items, ["position", "event_id", "type", "fen", "count", "voucher"],
                                f"fund-use-{query['measure']}-entries.csv")
        return {"measure": query["measure"], "filters": fact_filter(query), "items": items,
                "total_fen": sum(i["fen"] for i in items),
                "next_cursor": facts[-1]["_id"] if len(facts) == query["limit"] else None}

    # -- reconciliation ------------------------------------------------------------------------------
    @api("GET", "/api/v1/audit/reconciliation", roles=READERS, query=s.ReconcileQuery, response=s.ReconciliationOut,
         summary="Balances rebuilt from the ledger against the vouchers service's own, per programme and voucher")
    def reconciliation(self, call):
        """One page of programmes (`after`, `limit`), one read of the facts for all of them."""
        wanted, after, limit = call.query.get("programme"), call.query.get("after"), call.query["limit"]
        facts = list(self.store.facts({"programme": wanted} if wanted else {},
                                      fields=("programme", "voucher", "bucket", "fen", "count", "position",
                                              "event_id", "type")))
        ours = domain.balances(domain.sum_facts(facts, "programme"))
        try:
            theirs = {p["programme_id"]: p for p in self._ask_vouchers("programme_balances")}
        except Unavailable as exc:
            # Not a failure of this request: the ledger's side is still worth reading.
            return {"ok": False, "compared": False, "reason": exc.message, "ledger_size": self.store.head()["size"],
                    "through_position": self.store.projector_position() - 1,
                    "ledger_balances": [dict(v, programme_id=k) for k, v in sorted(ours.items(), key=lambda i: str(i[0]))
                                        if k is not None]}
        programmes = sorted((set(theirs) | set(ours)) - {None})
        if wanted:
            programmes = [p for p in programmes if p == wanted]
        if after:
            programmes = [p for p in programmes if p > after]
        page = programmes[:limit]
        by_programme = {}
        for fact in facts:
            by_programme.setdefault(fact["programme"], []).append(fact)
        report = [self._reconcile_programme(p, ours.get(p), theirs.get(p), by_programme.get(p, [])) for p in page]
        return {"ok": all(r["ok"] for r in report), "compared": True, "ledger_size": self.store.head()["size"],
                "through_position": self.store.projector_position() - 1, "programmes": report,
                "next_cursor": page[-1] if len(programmes) > limit else None}

    def _ask_vouchers(self, method, *args, **kwargs):
        return rpc_ask(self.vouchers, method, *args, amqp_uri=self.config["AMQP_URI"],
                       timeout=float(self.config.get("AUDIT_RPC_TIMEOUT_S") or 5),
                       absent="the vouchers service is not running; reconciliation needs its figures", **kwargs)

    def _reconcile_programme(self, programme_id, ours, theirs, facts):
        out = {"programme_id": programme_id, "differences": {}, "vouchers": [], "entries": []}
        if ours is None or theirs is None:
            out.update(ok=False, missing_in="ledger" if ours is None else "vouchers service")
            return out
        theirs_plain = {b: theirs.get(f"{b}_fen") for b in BUCKET_FIELDS}
        out["differences"] = domain.differences(ours, theirs_plain, BUCKET_FIELDS)
        if sum(ours[b] for b in domain.BUCKETS) != ours["budget"]:
            out["differences"]["conservation"] = {"ledger": sum(ours[b] for b in domain.BUCKETS),
                                                  "service": ours["budget"]}
        per_voucher = domain.sum_facts([f for f in facts if f["voucher"]], "voucher")
        seen = set()
        after = None
        while True:
            page = self._ask_vouchers("voucher_balances", programme_id, after=after, limit=1000)
            for v in page["vouchers"]:
                seen.add(v["voucher_id"])
                cells = per_voucher.get(v["voucher_id"], {})
                mine = {"face_value": cells.get("issued", {}).get("fen", 0)}
                mine.update({b: cells.get(b, {}).get("fen", 0) for b in ("free", "held", "paid", "returned")})
                diff = domain.differences(mine, {f: v.get(f"{f}_fen") for f in VOUCHER_FIELDS}, VOUCHER_FIELDS)
                if diff:
                    out["vouchers"].append(self._voucher_difference(v["voucher_id"], diff, facts))
            after = page.get("next")
            if not after:
                break
        for voucher_id in sorted(set(per_voucher) - seen):
            out["vouchers"].append(dict(self._voucher_difference(voucher_id, {}, facts),
                                        missing_in="vouchers service"))
        if out["differences"]:
            out["entries"] = [{"position": f["position"], "event_id": f["event_id"], "type": f["type"]}
                              for f in facts if not f["voucher"]]
        out["ok"] = not out["differences"] and not out["vouchers"]
        return out

    @staticmethod
    def _voucher_difference(voucher_id, diff, facts):
        seen, entries = set(), []
        for f in facts:
            if f["voucher"] == voucher_id and f["position"] not in seen:
                seen.add(f["position"])
                entries.append({"position": f["position"], "event_id": f["event_id"], "type": f["type"]})
        return {"voucher_id": voucher_id, "differences": diff, "entries": entries}

    # -- red flags -----------------------------------------------------------------------------------
    @api("GET", "/api/v1/audit/anomalies", roles=READERS, query=s.AnomalyQuery, response=s.AnomalyPage, summary="Red flags raised")
    def list_anomalies(self, call):
        query = call.query
        docs = self.store.anomalies(query.get("rule"), query.get("after"), query["limit"])
        return {"items": [anomaly_view(d) for d in docs],
                "next_cursor": docs[-1]["_id"] if len(docs) == query["limit"] else None}

    @api("GET", "/api/v1/audit/anomalies/<anomaly_id>", roles=READERS, response=s.AnomalyOut, summary="One red flag with its evidence")
    def get_anomaly(self, call):
        doc = self.store.anomaly(call.path["anomaly_id"])
        if doc is None:
            raise NotFound(f"no anomaly {call.path['anomaly_id']}")
        return anomaly_view(doc)

    # -- housekeeping ----------------------------------------------------------------------------------
    @timer(interval=1)
    def relay_outbox(self):
        """Publishes anomaly and checkpoint events a crash or a broker outage left in the outbox."""
        return self.store.relay_due(self.clock.now())


SERVICE = AuditService  # what `nameko run` starts
