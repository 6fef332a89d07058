"""The audit service's storage: the ledger (entries + head), checkpoints, the read models built
from it (facts for reports and reconciliation, dimensions, evidence indexes) and anomalies.

Appending with several pods consuming one queue: the head `{_id: "head", size, hash}` says how
many entries are chained. An appender inserts the entry keyed by its position (`_id = key(size)`),
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

ENTRIES, UNPROJECTED, META, CHECKPOINTS = "entries", "unprojected", "ledger_meta", "checkpoints"
FACTS, ANOMALIES, IDENTITY_SEEN = "facts", "anomalies", "identity_seen"
PROGRAMMES, VOUCHERS, ORDERS, AGENCIES, ENTERPRISES = "programmes", "vouchers", "orders", "agencies", "enterprises"
EVIDENCE, SPLITS, GROUPS, CAP_CLAIMS = "evidence", "splits", "groups", "cap_claims"
HEAD, PROJECTOR = "head", "projector"
DIMENSIONS = ("programme", "region", "tier", "service_code", "agency", "month")


def key(position):
    """Entries are keyed by their position as a zero-padded string, so `_id` order is ledger order."""
    return f"{position:012d}"


class AuditRepo(Repo):
    """FerretDB 1.24 (SQLite) uses no index for a query: every find scans its collection (a
    unique index is still enforced on insert). So the append path reads only the small head
    collection and leaves duplicate detection to the unique indexes, and each new entry is also
    put in the small `unprojected` collection the projector reads and empties."""

    # -- the ledger --------------------------------------------------------------------------
    def head(self):
        return self.db[META].find_one({"_id": HEAD}) or {"_id": HEAD, "size": 0, "hash": ledger.GENESIS}

    def repair_head(self):
        """Advances the head over entries a crashed appender inserted but did not count."""
        while True:
            head = self.head()
            orphan = self.entry(head["size"])
            if orphan is None:
                return head
            self._insert_once(UNPROJECTED, orphan)
            self._advance(head, orphan)

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
            head = self.head()
            entry = {"_id": key(head["size"]), "position": head["size"], "event_id": event["event_id"],
                     "type": event["type"], "event": stored_event, "prev_hash": head["hash"],
                     "hash": ledger.chain_hash(head["hash"], encoded),
                     "leaf": ledger.leaf_hash(encoded).hex(), "appended_at": now}
            try:
                self.db[ENTRIES].insert_one(entry)
            except DuplicateKeyError:
                # The position is taken (another pod, or an entry a crash left uncounted), or the
                # event is already in the ledger (a redelivery: event_id is unique).
                existing = self.entry_by_event(event["event_id"])
                self.repair_head()
                if existing is not None:
                    return existing, False
                continue
            self._insert_once(UNPROJECTED, entry)
            self._advance(head, entry)
            return entry, True

    def _advance(self, head, entry):
        if head["size"] == 0:
            try:
                self.db[META].insert_one({"_id": HEAD, "size": 1, "hash": entry["hash"]})
                return
            except DuplicateKeyError:
                pass
        # No match means another pod already moved the head over this entry.
        self.db[META].update_one({"_id": HEAD, "size": head["size"]},
                                 {"$set": {"size": head["size"] + 1, "hash": entry["hash"]}})

    def entry(self, position):
        return self.db[ENTRIES].find_one({"_id": key(position)})

    def entry_by_event(self, event_id):
        return self.db[ENTRIES].find_one({"event_id": event_id})

    def unprojected(self, position):
        """The entry at `position` if the projector has not applied it yet (a small collection)."""
        return self.db[UNPROJECTED].find_one({"_id": key(position)}) or self.entry(position)

    def projected(self, position):
        self.db[UNPROJECTED].delete_one({"_id": key(position)})

    def entries(self, after=-1, limit=100, type_=None):
        """A page in position order (a scan on FerretDB; for people browsing, not hot paths)."""
        query = {"position": {"$gt": after}}
        if type_:
            query["type"] = type_
        return list(self.db[ENTRIES].find(query).sort("_id", ASCENDING).limit(limit))

    def iter_entries(self, batch=2000):
        """Every stored entry in position order, streamed (one scan, never all in memory)."""
        return self.db[ENTRIES].find({}, {"leaf": 0, "appended_at": 0}).sort("_id", ASCENDING).batch_size(batch)

    def entries_between(self, start, size, batch=2000):
        """The stored entries at positions start..size-1, in position order, with their stored leaves."""
        return self.db[ENTRIES].find({"position": {"$gte": start, "$lt": size}}, {"appended_at": 0}).sort(
            "_id", ASCENDING).batch_size(batch)

    def leaves(self, size):
        """The stored Merkle leaves of the first `size` entries."""
        cursor = self.db[ENTRIES].find({"position": {"$lt": size}}, {"leaf": 1}).sort("_id", ASCENDING)
        return [bytes.fromhex(doc["leaf"]) for doc in cursor.batch_size(5000)]

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

    def _insert_once(self, collection, doc):
        try:
            self.db[collection].insert_one(doc)
        except DuplicateKeyError:
            pass

    def facts(self, match, fields=None):
        projection = {k: 1 for k in fields} if fields else None
        return self.db[FACTS].find(match, projection).sort("_id", ASCENDING)

    # -- what the rules remember, one document per key (string `_id` lookups only) ------------
    def remember(self, collection, key_, item):
        """Adds `item` to the list kept under `key_` (once) and returns the whole list."""
        self.db[collection].update_one({"_id": key_}, {"$addToSet": {"items": item}}, upsert=True)
        return sorted(self.db[collection].find_one({"_id": key_})["items"], key=lambda i: i["position"])

    def count_order(self, group, agency_id, position, event_id):
        """Counts an order in its group and for its agency, once per position. Returns (orders in
        the group, orders of the agency in the group, the agency's first 1,000 there)."""
        counts = []
        for key_ in (f"group:{group}", f"group:{group}|{agency_id}"):
            current = self.db[GROUPS].find_one({"_id": key_}) or {"n": 0, "last": -1, "orders": []}
            if current["last"] < position:
                update = {"$inc": {"n": 1}, "$set": {"last": position}}
                if len(current["orders"]) < 1000:
                    update["$push"] = {"orders": {"position": position, "event_id": event_id}}
                try:
                    self.db[GROUPS].update_one({"_id": key_, "last": current["last"]} if current["last"] >= 0
                                               else {"_id": key_}, update, upsert=True)
                except DuplicateKeyError:
                    pass  # another projector run counted it (its lease expired mid-entry)
            counts.append(self.db[GROUPS].find_one({"_id": key_}))
        return counts[0]["n"], counts[1]["n"], counts[1]["orders"]

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


    # -- sign-in events read from Keycloak (services/audit/identity.py) -----------------------------
    def identity_cursor(self, source):
        """The time (ms) of the newest Keycloak event of `source` (user, admin) read so far, or None."""
        doc = self.db[META].find_one({"_id": f"identity:{source}"})
        return doc["time_ms"] if doc else None

    def set_identity_cursor(self, source, time_ms):
        """Moves the cursor forward only: two pods reading at once never move it back."""
        key_ = f"identity:{source}"
        self._insert_once(META, {"_id": key_, "time_ms": time_ms})
        self.db[META].update_one({"_id": key_, "time_ms": {"$lt": time_ms}}, {"$set": {"time_ms": time_ms}})

    def identity_seen(self, keycloak_event_id):
        return self.db[IDENTITY_SEEN].find_one({"_id": keycloak_event_id}) is not None

    def mark_identity_seen(self, keycloak_event_id):
        self._insert_once(IDENTITY_SEEN, {"_id": keycloak_event_id})


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
        # event_id unique: the guard that two pods never append one event twice.
        ENTRIES: [IndexModel([("event_id", ASCENDING)], unique=True), IndexModel([("position", ASCENDING)]),
                  IndexModel([("type", ASCENDING)])],
        FACTS: [IndexModel([(name, ASCENDING)]) for name in ("voucher", "bucket") + DIMENSIONS],
        ANOMALIES: [IndexModel([("rule", ASCENDING)])],
    }
