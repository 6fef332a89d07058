"""The audit service's storage: the ledger (entries + head), checkpoints, the read models built
from it (facts for reports and reconciliation, dimensions, evidence indexes) and anomalies.

Appending: the broker gives `audit.record` to one pod at a time, but a pod taking over while the
last one's writes still land, and the sign-ins each pod collects, append side by side. The head
`{_id: "head", size, hash}` says how many entries are chained. An appender inserts the entry keyed
by its position (`_id = key(size)`), then advances the head with a guard on `size`. Two pods racing
for a position: one insert wins, the other gets a duplicate key and tries the next position. A crash
between the insert and the head update leaves an entry one past the head; whoever appends next (or
the service at start) finds it and advances the head over it (`repair_head`). Positions are gap-free and ordered.

What the rules remember (split orders, evidence reuse, claims at the cap, orders per region) is kept
per key in documents that stop growing: a count and at most KEPT items (the first ones, or the most
recent in a ring), because every write of a document on FerretDB costs as much as the document is big.
"""
import logging
import uuid
from datetime import datetime, timezone

from eventlet.greenpool import GreenPool
from eventlet.semaphore import Semaphore
from pymongo import ASCENDING, IndexModel, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from ipvkit.storage import MongoStore, Repo
from services.audit import ledger

log = logging.getLogger(__name__)

ENTRIES, META, CHECKPOINTS = "entries", "ledger_meta", "checkpoints"
FACTS, ANOMALIES, IDENTITY_SEEN = "facts", "anomalies", "identity_seen"
PROGRAMMES, VOUCHERS, ORDERS, AGENCIES, ENTERPRISES = "programmes", "vouchers", "orders", "agencies", "enterprises"
# One collection of bounded tallies, keyed "<rule>:<key>" (it replaced growing lists per rule).
TALLIES = "tallies"
SPLITS, EVIDENCE, CAP_CLAIMS, GROUPS = "split", "evidence", "cap", "group"
HEAD, PROJECTOR = "head", "projector"
LEASE_GONE = datetime(1970, 1, 1, tzinfo=timezone.utc)
DIMENSIONS = ("programme", "region", "tier", "service_code", "agency", "month")
KEPT = 20  # items a remembered key keeps: evidence enough for a flag, a document that stays small
APPENDED_KEPT = 2000  # entries this process appended and its projector has not applied yet, kept in memory
PREFETCH_READS = 8  # the projector's reads in flight at once: a chunk's keys, not the database's whole pool
READ_MODELS_KEPT = 50_000  # dimensions and tallies remembered by the projector; past that it starts afresh


class ProjectionConflict(Exception):
    """The read models were changed by someone other than this process's projector."""


def key(position):
    """Entries are keyed by their position as a zero-padded string, so `_id` order is ledger order."""
    return f"{position:012d}"


class AuditRepo(Repo):
    """FerretDB 1.24 (SQLite) uses no secondary index for a query: a find by anything but `_id`
    scans its collection (a unique index is still enforced on insert). So the append path reads
    only the head and leaves duplicate detection to the unique indexes, and the projector reads
    entries by `_id` (their position)."""

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
            self._advance(head, orphan)

    def append(self, event, now):
        """Appends the event once (by event_id). Returns (entry, appended_now).
        One append at a time per process, in delivery order: concurrent workers would only race
        for the same position, and a queue's order (one producer's order) is kept in the ledger.
        Group commit: the worker holding the lock appends every event the others queued
        meanwhile in one insert and one head update, so the ledger's rate is not one event per
        two database round trips."""
        store = self.store
        waiting = {"event": event, "now": now, "done": None}
        store.append_queue.append(waiting)
        with store.append_lock:
            if waiting["done"] is None:
                batch, store.append_queue = store.append_queue, []
                if not any(other is waiting for other in batch):  # queued after a swap (OS threads)
                    batch.append(waiting)
                try:
                    self._append_batch(batch)
                finally:
                    for other in batch:  # a failure: each worker tries its own again
                        if other["done"] is None:
                            other["done"] = False
        if waiting["done"] is False:
            with store.append_lock:
                return self._append(event, now)
        return waiting["done"]

    def _entry(self, head, event, now):
        encoded = ledger.canonical(event)
        return {"_id": key(head["size"]), "position": head["size"], "event_id": event["event_id"],
                "type": event["type"], "event": ledger.plain(event), "prev_hash": head["hash"],
                "hash": ledger.chain_hash(head["hash"], encoded), "leaf": ledger.leaf_hash(encoded).hex(),
                "appended_at": now}

    def _append_batch(self, batch):
        """Chains the queued events after the head and inserts them in order; from the first one
        refused (a taken position, a redelivered event) on, they go one by one."""
        head = self.store.head_cache or self.head()
        entries, at = [], head
        for waiting in batch:
            entries.append(self._entry(at, waiting["event"], waiting["now"]))
            at = {"size": at["size"] + 1, "hash": entries[-1]["hash"]}
        try:
            self.db[ENTRIES].insert_many(entries, ordered=True)
            inserted = len(entries)
        except BulkWriteError as exc:
            inserted = exc.details.get("nInserted", 0)
        if inserted:
            last = entries[inserted - 1]
            self._advance(head, last, inserted)
            self.store.head_cache = {"_id": HEAD, "size": last["position"] + 1, "hash": last["hash"]}
            self._remember(entries[:inserted])
        else:
            self.store.head_cache = None
        for waiting, entry in zip(batch[:inserted], entries):
            waiting["done"] = (entry, True)
        for waiting in batch[inserted:]:
            waiting["done"] = self._append(waiting["event"], waiting["now"])

    def _append(self, event, now):
        """Two writes in the usual case: the entry, keyed by its position, and the head. The head
        as this process last left it saves a read; a position found taken re-reads it."""
        while True:
            head = self.store.head_cache or self.head()
            entry = self._entry(head, event, now)
            try:
                self.db[ENTRIES].insert_one(entry)
            except DuplicateKeyError:
                # The position is taken (by another pod, or by this event: a crash before its
                # head update), or the event is already in the ledger (a redelivery: event_id is
                # unique, and only then is the slower lookup by event_id needed).
                self.store.head_cache = None
                taken = self.entry(head["size"])
                if taken is not None and taken["event_id"] != event["event_id"]:
                    self.repair_head()
                    continue
                existing = taken or self.entry_by_event(event["event_id"])
                self.repair_head()
                if existing is not None:
                    return existing, False
                continue
            self._advance(head, entry)
            self.store.head_cache = {"_id": HEAD, "size": head["size"] + 1, "hash": entry["hash"]}
            self._remember([entry])
            return entry, True

    def _advance(self, head, last, count=1):
        """Moves the head over `count` entries inserted after it, `last` the newest of them."""
        if head["size"] == 0:
            try:
                self.db[META].insert_one({"_id": HEAD, "size": count, "hash": last["hash"]})
                return
            except DuplicateKeyError:
                pass
        # No match means another pod already moved the head over these entries.
        self.db[META].update_one({"_id": HEAD, "size": head["size"]},
                                 {"$set": {"size": head["size"] + count, "hash": last["hash"]}})

    def _remember(self, entries):
        """Keeps what this process just inserted for its projector, which would otherwise read each
        entry back (a read per entry, a tenth of the chain's database commands). Bounded: while
        another pod holds the projector's lease, nobody here takes them."""
        appended = self.store.appended
        for entry in entries:
            appended[entry["position"]] = entry
        while len(appended) > APPENDED_KEPT:
            del appended[next(iter(appended))]

    def entry_to_project(self, position):
        """(the entry at `position`, whether this process appended it): as it inserted it, else as stored."""
        entry = self.store.appended.pop(position, None)
        return (entry, True) if entry is not None else (self.entry(position), False)

    def known_size(self, fresh=False):
        """The ledger's size as this process's last append left the head, without a read; `fresh`
        (or nothing appended here yet) reads the head, and sees what other pods appended."""
        return ((None if fresh else self.store.head_cache) or self.head())["size"]

    def entry(self, position):
        return self.db[ENTRIES].find_one({"_id": key(position)})

    def entry_by_event(self, event_id):
        return self.db[ENTRIES].find_one({"event_id": event_id})

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
        to apply next, or None when another pod holds the lease. The dimensions this process
        remembers stay valid only if it held the cursor last and left it where it is now."""
        store = self.store
        before = self.db[META].find_one_and_update(
            {"_id": PROJECTOR, "lease_until": {"$lte": now}},
            {"$set": {"lease_until": now + lease, "owner": store.projector_id}})
        if before is None:
            try:
                self.db[META].insert_one({"_id": PROJECTOR, "position": 0, "lease_until": now + lease,
                                          "owner": store.projector_id})
                before = {"position": 0, "owner": store.projector_id}
            except DuplicateKeyError:
                return None  # another pod holds the lease
        if before.get("owner") != store.projector_id or before["position"] != store.dims_position:
            self.forget_read_models()
        for applied in [p for p in store.appended if p < before["position"]]:   # another pod applied them
            del store.appended[applied]
        store.dims_position, store.lease_until = before["position"], now + lease
        return before["position"]

    def held_position(self, now, margin):
        """The cursor's position if this process holds the lease for at least `margin` more (it
        kept it after its last run), else None: the next run then needs no claim."""
        store = self.store
        if store.lease_until is not None and now + margin < store.lease_until:
            return store.dims_position
        return None

    def save_projection(self, facts, now, position, to, lease):
        """Writes what applying the entries from `position` to `to` changed (dimensions and tallies,
        each key once, then the facts), then moves the cursor: see `keep_projector`. A write that
        fails leaves the cursor where it was, and the entries are applied again from there."""
        try:
            self.write_read_models()
            self.add_facts(facts)
        except (PyMongoError, ProjectionConflict):
            self.forget_read_models()
            raise
        return self.keep_projector(now, position, to, lease)

    def keep_projector(self, now, position, to, lease):
        """Moves the cursor from `position` to `to` and extends this process's lease, in one write:
        while entries keep coming, each run needs no claim of its own. False, and the lease
        forgotten, if the cursor is not where this process left it (another pod took over)."""
        store = self.store
        done = self.db[META].update_one({"_id": PROJECTOR, "position": position, "owner": store.projector_id},
                                        {"$set": {"position": to, "lease_until": now + lease}})
        if done.matched_count:
            store.dims_position, store.lease_until = to, now + lease
            if len(store.dims) > READ_MODELS_KEPT:
                store.dims.clear()
            return True
        store.lease_until = None
        self.forget_read_models()
        return False

    def forget_read_models(self):
        """Drops what this process remembers of the read models (it may no longer be what is stored)."""
        self.store.dims.clear()
        self.store.unwritten.clear()
        self.store.counted.clear()

    def release_projector(self):
        """Lets a kept lease go (the service is stopping, or another pod appends), so another pod
        builds at once."""
        store = self.store
        if store.lease_until is not None:
            self.db[META].update_one({"_id": PROJECTOR, "owner": store.projector_id},
                                     {"$set": {"lease_until": LEASE_GONE}})
            store.lease_until = None

    def projector_position(self):
        doc = self.db[META].find_one({"_id": PROJECTOR})
        return doc["position"] if doc else 0

    # -- dimensions and tallies: read once, written once per save ----------------------------
    # Only the pod holding the cursor's lease writes them, in ledger order, so while it holds it
    # what it remembers is what is stored, plus what it has not written yet (`unwritten`, and the
    # tallies in `counted`, whose remembered documents are what to write). A run
    # writes each changed key once per save (SAVE_EVERY entries), not once per entry: the
    # projector keeps up with the appends instead of waiting on a round trip per rule.
    def dimension(self, collection, key):
        cached = self.store.dims.get((collection, key))
        if cached is None:
            cached = self._remember_read(collection, key, self.db[collection].find_one({"_id": key}))
        return cached

    def prefetch(self, keys):
        """Reads the dimensions and tallies `keys` names that this process does not remember, side by
        side (by `_id`, so each is one cheap read even on FerretDB), so a chunk waits about one
        round trip for its reads instead of one per key."""
        missing = list(dict.fromkeys(k for k in keys if k not in self.store.dims))
        read = self.store.prefetch_pool.imap(lambda k: (k, self.db[k[0]].find_one({"_id": k[1]})), missing)
        for (collection, key_), doc in read:
            self._remember_read(collection, key_, doc)

    def _remember_read(self, collection, key, doc):
        """Remembers a dimension as read, with what this process set and has not written yet."""
        unwritten = self.store.unwritten.get((collection, key))
        cached = {**(doc or {}), **unwritten, "_id": key} if unwritten else (doc or {})
        self.store.dims[(collection, key)] = cached
        return cached

    def set_dimension(self, collection, key, values):
        self.store.unwritten.setdefault((collection, key), {}).update(values)
        cached = self.store.dims.get((collection, key))
        if cached is not None:
            self.store.dims[(collection, key)] = {**cached, **values, "_id": key}

    def write_read_models(self):
        """One bulk write per collection. A tally is written only if its count is still the one this
        process read or wrote last: were another writer to count meanwhile (the lease rules that
        out), the save fails instead of losing their count."""
        store, writes = self.store, {}
        for (collection, key_), values in store.unwritten.items():
            writes.setdefault(collection, []).append(UpdateOne({"_id": key_}, {"$set": values}, upsert=True))
        guarded = 0
        for key_, stored_n in store.counted.items():
            counted = store.dims[(TALLIES, key_)]
            if stored_n:
                guarded += 1
                op = UpdateOne({"_id": key_, "n": stored_n}, {"$set": {k: v for k, v in counted.items() if k != "_id"}})
            else:
                op = InsertOne(counted)   # a first count: a second insert of the key fails on its `_id`
            writes.setdefault(TALLIES, []).append(op)
        for collection, ops in writes.items():
            done = self.db[collection].bulk_write(ops, ordered=False)
            if collection == TALLIES and done.matched_count < guarded:
                raise ProjectionConflict(f"{guarded - done.matched_count} tallies were changed by another writer")
        store.unwritten.clear()
        store.counted.clear()

    # -- facts ---------------------------------------------------------------------------------
    def add_facts(self, facts):
        """Idempotent: a fact's `_id` is its entry position and index, so re-applying adds nothing."""
        if not facts:
            return
        try:
            self.db[FACTS].insert_many(facts, ordered=False)
        except BulkWriteError as exc:
            if any(e["code"] != 11000 for e in exc.details.get("writeErrors", ())) or exc.details.get("writeConcernErrors"):
                raise

    def facts(self, match, fields=None):
        projection = {k: 1 for k in fields} if fields else None
        return self.db[FACTS].find(match, projection).sort("_id", ASCENDING)

    # -- what the rules remember, one small document per key (read and written by `_id`) -----
    def tally(self, rule, key_, position, item=None, recent=False):
        """Counts the entry at `position` under the rule's `key_` once and keeps `item` among the
        key's first KEPT items, or with `recent` among its last KEPT (a ring). Returns (count, items
        in ledger order). Re-applying an entry (positions only grow under the projector) changes nothing."""
        key_ = f"{rule}:{key_}"
        doc = self.dimension(TALLIES, key_)
        if doc and doc["last"] >= position:
            return doc["n"], self._items(doc)
        n = doc.get("n", 0)
        slot = n % KEPT if recent else n
        items = dict(doc.get("items", {}))
        if item and slot < KEPT:
            items[str(slot)] = item
        counted = {"_id": key_, "n": n + 1, "last": position, "items": items}
        self.store.counted.setdefault(key_, n)   # the count stored, as this process last read or wrote it
        self.store.dims[(TALLIES, key_)] = counted
        return counted["n"], self._items(counted)

    @staticmethod
    def _items(doc):
        return sorted(doc["items"].values(), key=lambda i: i["position"])

    def count_order(self, group, agency_id, position, event_id):
        """Counts an order in its group and for its agency, once per position. Returns (orders in
        the group, orders of the agency in the group, the agency's first KEPT there)."""
        item = {"position": position, "event_id": event_id}
        total, _ = self.tally(GROUPS, group, position)
        of_agency, orders = self.tally(GROUPS, f"{group}|{agency_id}", position, item)
        return total, of_agency, orders

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
        self._insert_once(IDENTITY_SEEN, {"_id": keycloak_event_id})  # another pod may have read it too

    def _insert_once(self, collection, doc):
        """Inserts `doc` unless a document with its _id is there already (a repeat changes nothing)."""
        try:
            self.db[collection].insert_one(doc)
        except DuplicateKeyError:
            pass


class AuditStore(MongoStore):
    repo_class = AuditRepo

    def setup(self):
        super().setup()
        self.append_lock = Semaphore()
        self.append_queue = []         # events waiting for the next group commit
        self.head_cache = None         # the head as this process's last append left it
        self.appended = {}             # position -> entry this process inserted, until its projector applies it
        self.projecting = Semaphore()
        self.projector_id = uuid.uuid4().hex
        self.dims, self.dims_position = {}, None   # dimensions and tallies as this process's projector left them
        self.unwritten = {}            # (collection, key) -> dimension values set and not written yet
        self.counted = {}              # tally key -> its count as stored, for tallies counted and not written yet
        self.prefetch_pool = GreenPool(PREFETCH_READS)
        self.lease_until = None        # until when this process holds the projector's lease, if it does

    def start(self):
        super().start()
        self.repo_class(self).repair_head()  # an entry a crash left uncounted is counted now

    def stop(self):
        try:
            self.repo_class(self).release_projector()
        except PyMongoError:
            log.warning("the projector's lease was not let go; it lapses by itself")
        super().stop()

    kill = MongoStore.kill

    outbox_collections = (CHECKPOINTS, ANOMALIES)
    indexes = {
        # event_id unique: the guard that two pods never append one event twice.
        ENTRIES: [IndexModel([("event_id", ASCENDING)], unique=True), IndexModel([("position", ASCENDING)]),
                  IndexModel([("type", ASCENDING)])],
        FACTS: [IndexModel([(name, ASCENDING)]) for name in ("voucher", "bucket") + DIMENSIONS],
        ANOMALIES: [IndexModel([("rule", ASCENDING)])],
    }
