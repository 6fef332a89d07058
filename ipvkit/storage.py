"""Storage: one database per service, indexes made at start, and the transactional outbox.

An aggregate document carries its pending events in an `outbox` array and `outbox_due`, written in
the same single-document update as the state change. One relay at a time publishes a document's
outbox, under a lease in its own field (`relay_until`, which writers never touch): it publishes with
confirms and `mandatory`, clears the outbox in one write, and loops while writers appended more
meanwhile. A write that finds no relay holding the document takes the lease itself and publishes
right away. A crash anywhere leaves the events in the document: at-least-once, in order per
aggregate. The 1 s sweep retries by `_id` what this process failed to publish, and scans for what a
crashed process left behind once per lease (its lease holds them that long anyway).

Only what FerretDB 1.24 and MongoDB both do: no transactions, no projection on findAndModify,
and `$pull` with a condition is silently ignored by FerretDB, so events are `$pop`ped from the
head with the head's `event_id` as the guard.
"""
import logging
from datetime import datetime, timedelta, timezone

from nameko.amqp.publish import Publisher
from nameko.extensions import DependencyProvider
from pymongo import ASCENDING, IndexModel, MongoClient, ReturnDocument, monitoring
from pymongo.errors import DuplicateKeyError, PyMongoError

from ipvkit import metrics
from ipvkit.amqp import UNROUTED_QUEUE, events_exchange
from ipvkit.config import required

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
RETRY_AFTER_FAILURE = timedelta(seconds=2)
IDEMPOTENCY = "idempotency"


WRITES = {"insert": None, "update": "updates", "delete": "deletes", "findAndModify": "query"}
READS = ("find", "count", "aggregate", "distinct")


def _pinned(filter_):
    """A filter the store looks up by the `_id` index: a top-level `_id` string (FerretDB pushes
    only that down; MongoDB would use its index for more)."""
    return isinstance(filter_, dict) and isinstance(filter_.get("_id"), str)


def lease_free(now):
    """The filter for a document no relay holds at `now`."""
    return {"$or": [{"relay_until": None}, {"relay_until": {"$lt": now}}]}


class CommandCounter(monitoring.CommandListener):
    """Counts every database command by collection, read or write, and `by_id` or `scan`: the
    benchmark divides these by the orders placed, and a hot path that scans shows up here."""

    def __init__(self, service):
        self.service = service

    def started(self, event):
        name, cmd = event.command_name, event.command
        if name in WRITES:
            kind = "write"
            if name == "insert":
                access = ["by_id"] * len(cmd.get("documents", ()))
            elif name == "findAndModify":
                access = ["by_id" if _pinned(cmd.get("query")) else "scan"]
            else:
                access = ["by_id" if _pinned(op.get("q")) else "scan" for op in cmd.get(WRITES[name], ())]
        elif name in READS:
            kind = "read"
            access = ["by_id" if name == "find" and _pinned(cmd.get("filter")) else "scan"]
        else:
            return
        collection = cmd.get(name)
        for how in access:
            metrics.DB_COMMANDS.labels(self.service, collection, kind, how).inc()

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


class ConcurrentChange(Exception):
    """The document changed between read and write; read again and retry."""


class MongoStore(DependencyProvider):
    """Subclass per service with `indexes` ({collection: [IndexModel]}), `outbox_collections`
    (collections whose documents are aggregates with an outbox) and `repo_class`."""

    indexes = {}
    outbox_collections = ()
    repo_class = None

    def setup(self):
        config = self.container.config
        self.service_name = self.container.service_name
        self.client = MongoClient(required(config, "MONGO_URI"), tz_aware=True,
                                  serverSelectionTimeoutMS=int(config.get("MONGO_TIMEOUT_MS", 5000)),
                                  event_listeners=[CommandCounter(self.service_name)])
        self.db = self.client[config.get("MONGO_DB") or f"ipv_{self.service_name}"]
        self.exchange = events_exchange(self.service_name)
        self.publisher = Publisher(required(config, "AMQP_URI"), use_confirms=True, mandatory=True,
                                   declare=[self.exchange, UNROUTED_QUEUE])
        self.unflushed = {}  # (collection, _id) whose flush failed in this process: retry until when
        self.next_scan = datetime.min.replace(tzinfo=timezone.utc)

    def start(self):
        wanted = dict(self.indexes)
        for name in self.outbox_collections:
            wanted.setdefault(name, [])
            wanted[name] = list(wanted[name]) + [IndexModel([("outbox_due", ASCENDING)])]
        wanted[IDEMPOTENCY] = [IndexModel([("created_at", ASCENDING)])]
        for name, models in wanted.items():
            for model in models:
                # One at a time: FerretDB 1.24 drops the connection when a multi-index
                # createIndexes names indexes that already exist.
                self.db[name].create_indexes([model])

    def stop(self):
        self.client.close()

    kill = stop

    def get_dependency(self, worker_ctx):
        return self.repo_class(self)


class Repo:
    """Base of each service's storage wrapper: domain verbs go in the subclass."""

    def __init__(self, store):
        self.store = store
        self.db = store.db

    def set_if_newer(self, collection, doc_id, version_field, version, fields):
        """Sets `fields` and `version_field` on the document (made if missing) only if its stored
        version is older than `version` or absent; False when a newer one is stored. For read models
        and snapshots that late or repeated writers must not roll back."""
        try:
            self.db[collection].update_one(
                {"_id": doc_id, "$or": [{version_field: {"$lt": version}}, {version_field: {"$exists": False}}]},
                {"$set": dict(fields, **{version_field: version})}, upsert=True)
            return True
        except DuplicateKeyError:  # the document exists with a newer version: the upsert's insert collided
            return False

    # -- writing aggregates with their events ------------------------------------------------
    def insert_aggregate(self, collection, doc, events, now):
        """Inserts a new aggregate with its first events. DuplicateKeyError means it exists."""
        doc = dict(doc, seq=len(events), outbox=list(events))
        if events:
            doc["outbox_due"] = now
        self.db[collection].insert_one(doc)
        if events:
            self.flush_outbox(collection, doc["_id"], now)
        return doc

    def update_aggregate(self, collection, current, changes, events, now):
        """Applies `changes` ($set fields) and appends `events` iff the document is still at the
        sequence `current` was read at; raises ConcurrentChange otherwise."""
        update = {"$set": dict(changes), "$inc": {"seq": len(events)}}
        doc = self._write(collection, {"_id": current["_id"], "seq": current["seq"]}, update, events, now)
        if doc is None:
            raise ConcurrentChange(f"{collection}/{current['_id']} changed concurrently")
        return doc

    def _write(self, collection, guard, update, events, now, read=None, unread=False):
        """One guarded update with its events appended to the document's outbox; None when the
        guard no longer matches. Given the document as `read` and no relay holding it then, the
        write also takes the relay lease (guarded on it), which saves the relay a round trip.
        `unread`: the caller wrote without reading the document, so the write takes the lease
        only if no relay holds it, and does not match if one does."""
        update = {k: dict(v) for k, v in update.items() if v}
        leased = events and (unread or (read is not None and (read.get("relay_until") is None
                                                              or read["relay_until"] < now)))
        if events:
            update.setdefault("$set", {})["outbox_due"] = now
            update.setdefault("$push", {})["outbox"] = {"$each": list(events)}
        if leased and unread:
            guard = dict(guard, **{"$and": list(guard.get("$and", [])) + [lease_free(now)]})
            update["$set"]["relay_until"] = now + LEASE
        elif leased:
            guard = dict(guard, relay_until=read.get("relay_until"))
            update["$set"]["relay_until"] = now + LEASE
        doc = self.db[collection].find_one_and_update(guard, update, return_document=ReturnDocument.AFTER)
        if doc is not None and events:
            self.flush_outbox(collection, doc["_id"], now, leased=doc if leased else None)
        return doc

    # -- the relay ---------------------------------------------------------------------------
    def flush_outbox(self, collection, doc_id, now, leased=None):
        """Publishes one document's pending events now. Never raises: what it cannot publish is
        retried by the next 1 s sweep."""
        try:
            return self._relay_one(collection, doc_id, now, leased)
        except Exception:
            log.exception("outbox flush of %s/%s failed; the sweep will retry", collection, doc_id)
            # Retried by `_id` until the lease this failure may have left behind has run out.
            self.store.unflushed.setdefault((collection, doc_id), now + LEASE + RETRY_AFTER_FAILURE)
            return 0

    def relay_due(self, now, batch=200):
        """The 1 s sweep: this process's failed flushes by `_id`, and a scan once per LEASE."""
        sent = 0
        for (collection, doc_id), until in list(self.store.unflushed.items()):
            done = self.flush_outbox(collection, doc_id, now)  # a new failure keeps the entry
            sent += done
            if done or now >= until:
                self.store.unflushed.pop((collection, doc_id), None)
        if now < self.store.next_scan:
            return sent
        self.store.next_scan = now + LEASE
        for name in self.store.outbox_collections:
            due = [doc["_id"] for doc in self.db[name].find({"outbox_due": {"$lte": now}}, {"_id": 1}).limit(batch)]
            # The backlog is what this scan found due (capped at `batch`): counting every pending
            # document would scan the collection again.
            metrics.OUTBOX_BACKLOG.labels(self.store.service_name, name).set(len(due))
            for doc_id in due:
                sent += self.flush_outbox(name, doc_id, now)
        return sent

    def _relay_one(self, collection, doc_id, now, leased=None):
        """Publishes the document's outbox under the lease, then clears it in one write. A crash
        before that write republishes the batch (consumers are idempotent). Events appended
        meanwhile are popped event by event and the loop publishes what is left: their writers
        found the lease taken and left them to this relay. `leased`: the document as the write that
        took the lease returned it."""
        coll, sent, doc = self.db[collection], 0, leased
        free = lease_free(now)
        guard = dict(free, _id=doc_id, outbox_due={"$lte": now})  # only the first turn waits for the due time
        while True:
            if doc is None:
                doc = coll.find_one_and_update(guard, {"$set": {"relay_until": now + LEASE}})
                if doc is None:  # nothing due, or another relay holds the lease
                    return sent
            events = doc.get("outbox", [])
            try:
                for event in events:
                    self._publish(event)
            except Exception:
                coll.update_one({"_id": doc_id}, {"$set": {"outbox_due": now + RETRY_AFTER_FAILURE},
                                                  "$unset": {"relay_until": ""}})
                raise
            sent += len(events)
            cleared = coll.update_one({"_id": doc_id, "outbox": {"$size": len(events)}},
                                      {"$set": {"outbox": []}, "$unset": {"outbox_due": "", "relay_until": ""}})
            if cleared.modified_count:
                return sent
            for event in events:
                coll.update_one({"_id": doc_id, "outbox.0.event_id": event["event_id"]}, {"$pop": {"outbox": -1}})
            coll.update_one({"_id": doc_id}, {"$unset": {"relay_until": ""}})
            guard, doc = dict(free, _id=doc_id), None

    def _publish(self, event):
        outcome = "failed"
        try:
            self.store.publisher.publish(
                event, exchange=self.store.exchange, routing_key=event["type"],
                message_id=event["event_id"], headers={"correlation_id": event["correlation_id"]})
            outcome = "published"
        finally:
            metrics.EVENTS_PUBLISHED.labels(self.store.service_name, event["type"], outcome).inc()

    # -- HTTP idempotency keys ---------------------------------------------------------------
    def idempotency(self):
        return self.db[IDEMPOTENCY]

    def ping(self):
        try:
            self.store.client.admin.command("ping")
            return True
        except PyMongoError:
            return False
