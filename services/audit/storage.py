"""The audit service's storage: the ledger (entries + head), checkpoints, the read models built
from it (facts for reports and reconciliation, dimensions, evidence indexes) and anomalies.

Appending with several pods consuming one queue: the head `{_id: "head", size, hash}` says how
many entries are chained. An appender inserts the entry keyed by its position (`_id = size`),
then advances the head with a guard on `size`. Two pods racing for a position: one insert wins,
the other gets a duplicate key and tries the next position. A crash between the insert and the
head update leaves an entry one past the head; whoever appends next (or the service at start)
finds it and advances the head over it (`repair_head`). Positions are gap-free and ordered.
"""
from eventlet.semaphore import Semaphore
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from ipvkit.storage import MongoStore, Repo
from services.audit import ledger

ENTRIES, META, CHECKPOINTS = "entries", "ledger_meta", "checkpoints"
FACTS, ANOMALIES = "facts", "anomalies"
PROGRAMMES, VOUCHERS, ORDERS, AGENCIES, ENTERPRISES = "programmes", "vouchers", "orders", "agencies", "enterprises"
EVIDENCE, CAP_CLAIMS = "evidence", "cap_claims"
HEAD, PROJECTOR = "head", "projector"
DIMENSIONS = ("programme", "region", "tier", "service_code", "agency", "month")


class AuditRepo(Repo):
    # -- the ledger --------------------------------------------------------------------------
    def head(self):
        return self.db[META].find_one({"_id": HEAD}) or {"_id": HEAD, "size": 0, "hash": ledger.GENESIS}

    def repair_head(self):
        """Advances the head over entries a crashed appender inserted but did not count."""
        while True:
            head = self.head()
            orphan = self.db[ENTRIES].find_one({"_id": head["size"]})
            if orphan is None:
                return head
            self.db[META].update_one({"_id": HEAD, "size": head["size"]},
                                     {"$set": {"size": head["size"] + 1, "hash": orphan["hash"]}}, upsert=False)
            if head["size"] == 0:  # the very first entry: the head document may not exist yet
                try:
                    self.db[META].insert_one({"_id": HEAD, "size": 1, "hash": orphan["hash"]})
                except DuplicateKeyError:
                    pass

    def append(self, event, now):
        """Appends the event once (by event_id). Returns (entry, appended_now).
        One append at a time per process, in delivery order: concurrent workers would only race
        for the same position, and a queue's order (one producer's order) is kept in the ledger."""
        with self.store.append_lock:
            return self._append(event, now)

    def _append(self, event, now):
        encoded = ledger.canonical(event)
        stored_event = ledger.plain(event)
        while True:
            existing = self.db[ENTRIES].find_one({"event_id": event["event_id"]})
            if existing is not None:
                self.repair_head()
                return existing, False
            head = self.head()
            entry = {"_id": head["size"], "event_id": event["event_id"], "type": event["type"],
                     "event": stored_event, "prev_hash": head["hash"],
                     "hash": ledger.chain_hash(head["hash"], encoded),
                     "leaf": ledger.leaf_hash(encoded).hex(), "appended_at": now}
            try:
                self.db[ENTRIES].insert_one(entry)
            except DuplicateKeyError:
                # The position was taken (another pod, or an uncounted entry), or the event is there.
                self.repair_head()
                continue
            self._advance(head, entry)
            return entry, True

    def _advance(self, head, entry):
        if head["size"] == 0:
            try:
                self.db[META].insert_one({"_id": HEAD, "size": 1, "hash": entry["hash"]})
                return
            except DuplicateKeyError:
                pass
        # No match means another pod already repaired the head over this entry.
        self.db[META].update_one({"_id": HEAD, "size": head["size"]},
                                 {"$set": {"size": head["size"] + 1, "hash": entry["hash"]}})

    def entry(self, position):
        return self.db[ENTRIES].find_one({"_id": position})

    def entry_by_event(self, event_id):
        return self.db[ENTRIES].find_one({"event_id": event_id})

    def entries(self, after=-1, limit=100, type_=None, upto=None):
        query = {"_id": {"$gt": after}}
        if upto is not None:
            query["_id"]["$lt"] = upto
        if type_:
            query["type"] = type_
        return list(self.db[ENTRIES].find(query).sort("_id", ASCENDING).limit(limit))

    def iter_entries(self, upto=None, batch=5000):
        """Every stored entry in position order, in pages (a 100,000-entry ledger never sits in memory)."""
        after = -1
        while True:
            page = self.entries(after, batch, upto=upto)
            yield from page
            if len(page) < batch:
                return
            after = page[-1]["_id"]

    def leaves(self, size):
        """The stored Merkle leaves of the first `size` entries."""
        cursor = self.db[ENTRIES].find({"_id": {"$lt": size}}, {"leaf": 1}).sort("_id", ASCENDING)
        return [bytes.fromhex(doc["leaf"]) for doc in cursor]

    # -- checkpoints ---------------------------------------------------------------------------
    def add_checkpoint(self, checkpoint, event, now):
        """Keyed by size: a checkpoint of the same size is the same checkpoint (Ed25519 signatures
        are deterministic), so two pods signing at once store it once. None if it exists."""
        try:
            return self.insert_aggregate(CHECKPOINTS, dict(checkpoint, _id=checkpoint["size"]), [event], now)
        except DuplicateKeyError:
            return None

    def checkpoint(self, size):
        return self.db[CHECKPOINTS].find_one({"_id": size})

    def latest_checkpoint(self):
        found = list(self.db[CHECKPOINTS].find().sort("_id", -1).limit(1))
        return found[0] if found else None

    def checkpoints(self, after=0, limit=100):
        return list(self.db[CHECKPOINTS].find({"_id": {"$gt": after}}).sort("_id", ASCENDING).limit(limit))

    # -- the projector's cursor ----------------------------------------------------------------
    def claim_projector(self, now, lease):
        """The read models are built by one pod at a time, in ledger order. Returns the position
        to apply next, or None when another pod holds the lease."""
        try:
            self.db[META].insert_one({"_id": PROJECTOR, "position": 0, "lease_until": now + lease})
            return 0
        except DuplicateKeyError:
            doc = self.db[META].find_one_and_update(
                {"_id": PROJECTOR, "lease_until": {"$lte": now}}, {"$set": {"lease_until": now + lease}},
                return_document=ReturnDocument.AFTER)
            return None if doc is None else doc["position"]

    def advance_projector(self, position):
        self.db[META].update_one({"_id": PROJECTOR, "position": position}, {"$set": {"position": position + 1}})

    def release_projector(self, now):
        self.db[META].update_one({"_id": PROJECTOR}, {"$set": {"lease_until": now}})

    def projector_position(self):
        doc = self.db[META].find_one({"_id": PROJECTOR})
        return doc["position"] if doc else 0

    # -- dimensions (what later events are grouped by) -----------------------------------------
    def dimension(self, collection, key):
        return self.db[collection].find_one({"_id": key}) or {}

    def set_dimension(self, collection, key, values):
        self.db[collection].update_one({"_id": key}, {"$set": values}, upsert=True)

    # -- facts ---------------------------------------------------------------------------------
    def add_facts(self, facts):
        """Idempotent: a fact's `_id` is its entry position and index, so re-applying adds nothing."""
        for fact in facts:
            self._insert_once(FACTS, fact)

    def facts(self, match, fields=None):
        projection = {k: 1 for k in fields} if fields else None
        return self.db[FACTS].find(match, projection).sort("_id", ASCENDING)

    # -- evidence indexes for the rules ----------------------------------------------------------
    def record_evidence(self, doc):
        self._insert_once(EVIDENCE, doc)

    def evidence_uses(self, kind, value):
        return list(self.db[EVIDENCE].find({"kind": kind, "value": value}).sort("position", ASCENDING))

    def orders_between(self, enterprise_id, agency_id, service_code, since_iso):
        return list(self.db[ORDERS].find({"enterprise": enterprise_id, "agency": agency_id,
                                           "service_code": service_code, "occurred_at": {"$gte": since_iso}})
                    .sort("position", ASCENDING))

    def group_order_counts(self, group, agency_id):
        return (self.db[ORDERS].count_documents({"group": group}),
                self.db[ORDERS].count_documents({"group": group, "agency": agency_id}))

    def group_orders_of(self, group, agency_id, limit=1000):
        return list(self.db[ORDERS].find({"group": group, "agency": agency_id}).sort("position", ASCENDING)
                    .limit(limit))

    def record_cap_claim(self, doc):
        """Returns every claim at the cap by this agency in this programme, this one included."""
        self._insert_once(CAP_CLAIMS, doc)
        return list(self.db[CAP_CLAIMS].find({"agency": doc["agency"], "programme": doc["programme"]})
                    .sort("position", ASCENDING).limit(1000))

    def _insert_once(self, collection, doc):
        try:
            self.db[collection].insert_one(doc)
        except DuplicateKeyError:
            pass

    # -- anomalies -------------------------------------------------------------------------------
    def add_anomaly(self, doc, event, now):
        """False when this flag was raised before (a re-applied entry)."""
        try:
            self.insert_aggregate(ANOMALIES, doc, [event], now)
            return True
        except DuplicateKeyError:
            return False

    def anomalies(self, rule=None, after=None, limit=50):
        query = {}
        if rule:
            query["rule"] = rule
        if after:
            query["_id"] = {"$gt": after}
        return list(self.db[ANOMALIES].find(query, {"outbox": 0}).sort("_id", ASCENDING).limit(limit))

    def anomaly(self, anomaly_id):
        return self.db[ANOMALIES].find_one({"_id": anomaly_id}, {"outbox": 0})


class AuditStore(MongoStore):
    repo_class = AuditRepo

    def setup(self):
        super().setup()
        self.append_lock = Semaphore()

    def start(self):
        super().start()
        self.repo_class(self).repair_head()  # an entry a crash left uncounted is counted now

    outbox_collections = (CHECKPOINTS, ANOMALIES)
    indexes = {
        ENTRIES: [IndexModel([("event_id", ASCENDING)], unique=True), IndexModel([("type", ASCENDING)])],
        FACTS: [IndexModel([(name, ASCENDING)]) for name in ("position", "voucher", "bucket") + DIMENSIONS],
        ORDERS: [IndexModel([("enterprise", ASCENDING), ("agency", ASCENDING), ("service_code", ASCENDING)]),
                 IndexModel([("group", ASCENDING), ("agency", ASCENDING)])],
        EVIDENCE: [IndexModel([("kind", ASCENDING), ("value", ASCENDING)])],
        CAP_CLAIMS: [IndexModel([("agency", ASCENDING), ("programme", ASCENDING)])],
        ANOMALIES: [IndexModel([("rule", ASCENDING)])],
    }
