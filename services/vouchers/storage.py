"""The vouchers service's storage: collections, indexes, and the guarded single-document verbs
the money path is built from (no multi-document transactions).

- A voucher document holds its orders and their claims (`orders.<order_id>`) with the balance
  buckets, so every order and claim step is one guarded update of one document, outbox included.
- Issuance spans two documents and runs in a crash-safe order: reserve on the programme (budget
  decrement plus a `pending.<voucher_id>` entry holding everything needed to finish), take the
  enterprise's annual cap (idempotent on the voucher id), insert the voucher, clear the entry.
  The service's `_complete_issue` is that whole sequence and is safe to run again from any point:
  the sweeper runs it for entries a crash left behind.
- Every guarded write relies on single-document atomicity, as MongoDB gives it. FerretDB 1.24 lacked
  it (#3040); the stack runs the patched build (`scripts/ferretdb-v1.24.2.patch`), so any
  number of pods share one database with no lock in the process.
"""
import uuid
from collections import Counter
from contextlib import contextmanager

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from ipvkit.storage import MongoStore, Repo

PROGRAMMES, REVISIONS, VOUCHERS, CAPS = "programmes", "programme_revisions", "vouchers", "annual_caps"
QUALIFICATIONS, AGENCIES, DOCUMENTS = "qualifications", "agencies", "documents"
FIGURES = "programme_figures"
SUMMED = ("face_value_fen", "free_fen", "held_fen", "paid_fen", "returned_fen")
FIXED = ("_id", "programme_id", "enterprise_id", "revision_id", "redemption_model")  # set at issue, never changed
FACTS_KEPT = 100_000


def new_id(prefix, hex_=None):
    return f"{prefix}_{hex_ or uuid.uuid4().hex[:20]}"


def order_id_for(voucher_id, hex_=None):
    return f"o_{voucher_id[2:]}_{hex_ or uuid.uuid4().hex[:8]}"


def voucher_of(order_or_claim_id):
    """Order and claim ids embed their voucher's id: the voucher document is found without an index."""
    parts = order_or_claim_id.split("_")
    return f"v_{parts[1]}" if len(parts) == 3 and parts[0] in ("o", "c") else None


def claim_id_for(order_id):
    return "c_" + order_id[2:]


def order_of_claim(claim_id):
    return "o_" + claim_id[2:]


class VoucherRepo(Repo):
    # -- programmes ----------------------------------------------------------------------------
    def create_programme(self, doc, revision, event, now):
        self.db[REVISIONS].insert_one(revision)
        return self.insert_aggregate(PROGRAMMES, doc, [event], now)

    def programme(self, programme_id):
        return self.db[PROGRAMMES].find_one({"_id": programme_id}, {"outbox": 0})

    def programmes(self, status=None, after=None, limit=50):
        query = {}
        if status:
            query["status"] = status
        if after:
            query["_id"] = {"$gt": after}
        return list(self.db[PROGRAMMES].find(query, {"outbox": 0, "pending": 0}).sort("_id", ASCENDING).limit(limit))

    def change_programme(self, current, changes, events, now, budget_delta=0, revision=None, remaining=None):
        """A programme transition guarded by its `seq` (and, given `remaining`, by the remaining
        budget its event reports); a budget change moves `remaining` in the same write and may
        not take it below zero."""
        if revision is not None:
            self.db[REVISIONS].insert_one(revision)  # unreferenced until the write below succeeds
        guard = {"_id": current["_id"], "seq": current["seq"]}
        if budget_delta < 0:
            guard["remaining_fen"] = {"$gte": -budget_delta}
        if remaining is not None:
            guard["remaining_fen"] = remaining
        update = {"$set": changes, "$inc": {"seq": len(events), "remaining_fen": budget_delta, "budget_fen": budget_delta}}
        return self._write(PROGRAMMES, guard, update, events, now)

    def revision(self, revision_id):
        cache = self.store.revisions
        if revision_id not in cache:  # revisions never change once written
            cache[revision_id] = self.db[REVISIONS].find_one({"_id": revision_id})
        return cache[revision_id]

    # -- issuance ------------------------------------------------------------------------------
    def reserve(self, programme_id, voucher_id, pending, today_iso):
        """Budget decrement and the pending entry in one write; None if closed, outside its window
        or short of budget. The returned document's `issue_no` numbers this reservation."""
        face = pending["face_value_fen"]
        return self.db[PROGRAMMES].find_one_and_update(
            {"_id": programme_id, "status": "open", "opens_on": {"$lte": today_iso},
             "closes_on": {"$gte": today_iso}, "remaining_fen": {"$gte": face},
             f"pending.{voucher_id}": {"$exists": False}},
            {"$inc": {"remaining_fen": -face, "issued_fen": face, "issue_no": 1},
             "$set": {f"pending.{voucher_id}": pending}},
            return_document=ReturnDocument.AFTER)

    def take_cap(self, key, voucher_id, face, cap):
        """Adds `face` to the enterprise's issued total for the year unless that passes `cap`.
        Idempotent on the voucher id, so finishing a reservation twice counts it once."""
        caps = self.db[CAPS]
        for _ in range(3):
            try:
                caps.update_one({"_id": key, "issued_fen": {"$lte": cap - face}, "vouchers": {"$ne": voucher_id}},
                                {"$inc": {"issued_fen": face}, "$push": {"vouchers": voucher_id}}, upsert=True)
                return True
            except DuplicateKeyError:
                doc = caps.find_one({"_id": key})
                if doc is not None:  # exists: either already counted, or the cap refused it
                    return voucher_id in doc["vouchers"]
        raise RuntimeError(f"annual cap counter {key} could not be written")

    def undo_reservation(self, programme_id, voucher_id, face):
        self.db[PROGRAMMES].update_one(
            {"_id": programme_id, f"pending.{voucher_id}": {"$exists": True}},
            {"$inc": {"remaining_fen": face, "issued_fen": -face}, "$unset": {f"pending.{voucher_id}": ""}})

    def insert_voucher(self, doc, event, now):
        try:
            inserted = self.insert_aggregate(VOUCHERS, doc, [event], now)
            self.store.remember(inserted)
            return inserted
        except DuplicateKeyError:
            return self.voucher(doc["_id"])

    def settle_reservation(self, programme_id, voucher_id):
        self.db[PROGRAMMES].update_one({"_id": programme_id}, {"$unset": {f"pending.{voucher_id}": ""}})

    def stale_reservations(self, before):
        """(programme, voucher id, entry) for every reservation older than `before`."""
        found = []
        for programme in self.db[PROGRAMMES].find({"pending": {"$exists": True}}, {"outbox": 0}):
            for voucher_id, entry in (programme.get("pending") or {}).items():
                if entry["reserved_at"] < before:
                    found.append((programme, voucher_id, entry))
        return found

    # -- vouchers, orders, claims --------------------------------------------------------------
    def voucher(self, voucher_id):
        doc = self.db[VOUCHERS].find_one({"_id": voucher_id}, {"outbox": 0})
        if doc is not None:
            self.store.remember(doc)
        return doc

    def placing(self, voucher_id):
        return self.store.placing(voucher_id)

    def voucher_facts(self, voucher_id):
        """What never changes in a voucher (FIXED), if this process has seen it: an order can be
        planned from it and written without reading the voucher first."""
        return self.store.voucher_facts.get(voucher_id)

    def change_voucher(self, read, guard, events, now, inc=None, set_=None, unset=None, add=None, unread=False):
        """A guarded write of the voucher `read` (the document as read before planning it, or with
        `unread` its FIXED facts only: the guard must then hold everything the plan assumed)."""
        voucher_id = read["_id"]
        update = {"$inc": inc or {}, "$set": set_ or {}, "$unset": unset or {}, "$addToSet": add or {}}
        if events and any(e["aggregate_id"] == voucher_id for e in events):
            update["$inc"]["seq"] = 1
        return self._write(VOUCHERS, dict(guard, _id=voucher_id), update, events, now, read=read, unread=unread)

    def vouchers(self, query, after=None, limit=50):
        query = dict(query)
        if after:
            query["_id"] = {"$gt": after}
        return list(self.db[VOUCHERS].find(query, {"outbox": 0}).sort("_id", ASCENDING).limit(limit))

    def expiring(self, today_iso, limit=500):
        return list(self.db[VOUCHERS].find({"status": "live", "valid_to": {"$lt": today_iso}}, {"outbox": 0}).limit(limit))

    # -- conservation reads --------------------------------------------------------------------
    def voucher_sums(self, programme_id, issue_no):
        """Bucket sums over the programme's vouchers issued up to reservation number `issue_no`.
        Summed here, not in $group: FerretDB 1.24 computes only the first accumulator of a $group."""
        sums = dict.fromkeys(SUMMED, 0)
        for doc in self.db[VOUCHERS].find({"programme_id": programme_id, "issue_no": {"$lte": issue_no}},
                                          dict.fromkeys(SUMMED, 1)):
            for name in SUMMED:
                sums[name] += doc[name]
        return sums

    def figures(self, programmes):
        """Everything the gauges show, in one pass over the vouchers (FerretDB 1.24 scans for any
        filter, so one scan instead of one per programme and figure): per programme the bucket sums
        up to its `issue_no` (as `voucher_sums`) and its live vouchers, and pending claims by state."""
        sums = {p["_id"]: dict.fromkeys(SUMMED, 0) for p in programmes}
        issue_no = {p["_id"]: p["issue_no"] for p in programmes}
        live, claims = dict.fromkeys(sums, 0), {"submitted": 0, "approved": 0}
        fields = dict.fromkeys(SUMMED + ("programme_id", "issue_no", "status", "claims_submitted", "claims_approved"), 1)
        for doc in self.db[VOUCHERS].find({}, fields):
            pid = doc["programme_id"]
            if pid not in sums:  # created after the programmes were read
                continue
            if doc["issue_no"] <= issue_no[pid]:
                for name in SUMMED:
                    sums[pid][name] += doc[name]
            live[pid] += doc["status"] == "live"
            for state in claims:
                claims[state] += doc[f"claims_{state}"]
        return sums, live, claims

    def save_figures(self, balances, as_of):
        """Keeps each programme's buckets as a recount found them at `as_of`, for pages that can show
        figures seconds old instead of summing every voucher on each view (2 s at 10,000 vouchers on
        FerretDB). A recount older than the stored one (another pod's, finishing later) is dropped."""
        for balance in balances:
            self.set_if_newer(FIGURES, balance["programme_id"], "as_of", as_of, balance)

    def recounted(self, programme_id):
        return self.db[FIGURES].find_one({"_id": programme_id}, {"_id": 0})

    # -- read models fed by events -------------------------------------------------------------
    def apply_qualification(self, qualification_id, fields_, sequence):
        """Commutative: the granted facts and a revocation date are each set once, in any order."""
        self.db[QUALIFICATIONS].update_one({"_id": qualification_id},
                                           {"$set": fields_, "$max": {"seq": sequence}}, upsert=True)

    def qualifications(self, enterprise_id):
        return list(self.db[QUALIFICATIONS].find({"enterprise_id": enterprise_id}))

    def apply_agency(self, agency_id, group, sequence, fields_):
        """Sets one group of an agency's fields (profile, status, rating, blacklist) only if this
        event is newer than the last one applied to that group: late and repeated events are no-ops."""
        return self.set_if_newer(AGENCIES, agency_id, f"{group}_seq", sequence, fields_)

    def agency(self, agency_id):
        return self.db[AGENCIES].find_one({"_id": agency_id})

    def apply_document(self, document_id, fields_):
        """A document uploaded for an order; its facts never change, so a redelivery sets the same."""
        self.db[DOCUMENTS].update_one({"_id": document_id}, {"$set": fields_}, upsert=True)

    def uploaded_documents(self, document_ids):
        """{document id: what document.uploaded said} for the ids this service has heard of."""
        if not document_ids:
            return {}
        return {d["_id"]: d for d in self.db[DOCUMENTS].find({"_id": {"$in": document_ids}})}

    def purge_idempotency_keys(self, before):
        return self.idempotency().delete_many({"created_at": {"$lt": before}}).deleted_count


class VoucherStore(MongoStore):
    repo_class = VoucherRepo
    outbox_collections = (PROGRAMMES, VOUCHERS)
    indexes = {
        PROGRAMMES: [IndexModel([("status", ASCENDING)])],
        VOUCHERS: [
            IndexModel([("programme_id", ASCENDING), ("issue_no", ASCENDING)]),
            IndexModel([("programme_id", ASCENDING), ("status", ASCENDING)]),
            IndexModel([("enterprise_id", ASCENDING)]),
            IndexModel([("agencies", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("valid_to", ASCENDING)]),
            IndexModel([("claims_submitted", ASCENDING)]),
            IndexModel([("claims_approved", ASCENDING)]),
            IndexModel([("claims_total", ASCENDING)]),
        ],
        QUALIFICATIONS: [IndexModel([("enterprise_id", ASCENDING)])],
    }

    def setup(self):
        super().setup()
        self.revisions = {}
        self.voucher_facts = {}
        self.in_flight = Counter()      # orders being placed in this process, by voucher

    @contextmanager
    def placing(self, voucher_id):
        """True when no other order on this voucher is being placed in this process. Contended, a
        write without a read mostly finds the relay lease another order took, and then costs each
        order a write more (100 at once on one voucher: p99 0.46 -> 1.1 s)."""
        self.in_flight[voucher_id] += 1
        try:
            yield self.in_flight[voucher_id] == 1
        finally:
            self.in_flight[voucher_id] -= 1
            if not self.in_flight[voucher_id]:
                del self.in_flight[voucher_id]

    def remember(self, voucher):
        if len(self.voucher_facts) >= FACTS_KEPT:  # ~200 bytes each: a bound, not an LRU; refilled by reads
            self.voucher_facts.clear()
        self.voucher_facts[voucher["_id"]] = {k: voucher[k] for k in FIXED}
