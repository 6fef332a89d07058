"""Storage: one database per service, indexes made at start, and the transactional outbox.

An aggregate document carries its pending events in an `outbox` array and `outbox_due` (when the
relay may next take them), written in the same single-document update as the state change. The
relay claims a document by pushing `outbox_due` forward (a lease), publishes its events in order
with confirms and `mandatory`, and pops each one once the broker has it. A crash anywhere leaves
the events in the document for the next sweep: at-least-once, in order per aggregate.

Only what FerretDB 1.24 and MongoDB both do: no transactions, no projection on findAndModify,
and `$pull` with a condition is silently ignored by FerretDB, so events are `$pop`ped from the
head with the head's `event_id` as the guard.
"""
import logging
from datetime import timedelta

from nameko.amqp.publish import Publisher
from nameko.extensions import DependencyProvider
from pymongo import ASCENDING, IndexModel, MongoClient, ReturnDocument
from pymongo.errors import PyMongoError

from ipvkit import metrics
from ipvkit.amqp import UNROUTED_QUEUE, events_exchange
from ipvkit.config import required

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
RETRY_AFTER_FAILURE = timedelta(seconds=2)
IDEMPOTENCY = "idempotency"


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
                                  serverSelectionTimeoutMS=int(config.get("MONGO_TIMEOUT_MS", 5000)))
        self.db = self.client[config.get("MONGO_DB") or f"ipv_{self.service_name}"]
        self.exchange = events_exchange(self.service_name)
        self.publisher = Publisher(required(config, "AMQP_URI"), use_confirms=True, mandatory=True,
                                   declare=[self.exchange, UNROUTED_QUEUE])

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

    # -- writing aggregates with their events ------------------------------------------------
    def insert_aggregate(self, collection, doc, events, now, flush=True):
        """Inserts a new aggregate with its first events. DuplicateKeyError means it exists."""
        doc = dict(doc, seq=len(events), outbox=list(events))
        if events:
            doc["outbox_due"] = now
        self.db[collection].insert_one(doc)
        if flush and events:
            self.flush_outbox(collection, doc["_id"], now)
        return doc

    def update_aggregate(self, collection, current, changes, events, now, flush=True):
        """Applies `changes` ($set fields) and appends `events` iff the document is still at the
        sequence `current` was read at; raises ConcurrentChange otherwise."""
        update = {"$set": dict(changes)}
        if events:
            update["$set"]["outbox_due"] = now
            update["$push"] = {"outbox": {"$each": list(events)}}
            update["$inc"] = {"seq": len(events)}
        doc = self.db[collection].find_one_and_update(
            {"_id": current["_id"], "seq": current["seq"]}, update, return_document=ReturnDocument.AFTER)
        if doc is None:
            raise ConcurrentChange(f"{collection}/{current['_id']} changed concurrently")
        if flush and events:
            self.flush_outbox(collection, doc["_id"], now)
        return doc

    # -- the relay ---------------------------------------------------------------------------
    def flush_outbox(self, collection, doc_id, now):
        """Publishes one document's pending events now. Never raises: what it cannot publish
        stays in the outbox for the sweep."""
        try:
            return self._relay_one(collection, doc_id, now)
        except Exception:
            log.exception("outbox flush of %s/%s failed; the sweep will retry", collection, doc_id)
            return 0

    def relay_due(self, now, batch=200):
        """The sweep: publishes every document's due events. Returns how many were sent."""
        sent = 0
        for name in self.store.outbox_collections:
            due = [doc["_id"] for doc in self.db[name].find({"outbox_due": {"$lte": now}}, {"_id": 1}).limit(batch)]
            # The backlog is what this sweep found due (capped at `batch`): counting every pending
            # document each second would scan the collection.
            metrics.OUTBOX_BACKLOG.labels(self.store.service_name, name).set(len(due))
            for doc_id in due:
                sent += self.flush_outbox(name, doc_id, now)
        return sent

    def _relay_one(self, collection, doc_id, now):
        coll = self.db[collection]
        doc = coll.find_one_and_update({"_id": doc_id, "outbox_due": {"$lte": now}},
                                       {"$set": {"outbox_due": now + LEASE}})
        if doc is None:  # nothing due, or another relay holds the lease
            return 0
        sent = 0
        try:
            for event in doc.get("outbox", []):
                self._publish(event)
                coll.update_one({"_id": doc_id, "outbox.0.event_id": event["event_id"]},
                                {"$pop": {"outbox": -1}})
                sent += 1
        except Exception:
            coll.update_one({"_id": doc_id}, {"$set": {"outbox_due": now + RETRY_AFTER_FAILURE}})
            raise
        # Release the lease only if no new event arrived meanwhile (the writer set outbox_due).
        coll.update_one({"_id": doc_id, "outbox": {"$size": 0}}, {"$unset": {"outbox_due": ""}})
        return sent

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
