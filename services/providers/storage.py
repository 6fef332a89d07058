"""The providers service's storage: agencies (aggregates with an outbox; each keeps its full rating
history and blacklist history inside, so a rating and its event are one single-document write), and
the read model of voucher orders fed by the vouchers service's events."""
import re
from collections import Counter

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from ipvkit.storage import ConcurrentChange, MongoStore, Repo
from services.providers import domain

AGENCIES, ORDERS = "agencies", "orders"
# Lists and single reads leave out what only the history routes show.
SUMMARY = {"outbox": 0, "evaluations": 0, "blacklist_history": 0}
# A standing event is at most 256 KiB: list at most this many open orders in it (~100 bytes each).
AFFECTED_ORDERS_LIMIT = 2000
COUNTERS = domain.RECORD_KEYS[2:]


class ProviderRepo(Repo):
    # -- agencies ----------------------------------------------------------------------------
    def register(self, doc, event, now):
        """Returns the stored document, or None if the credit code is already registered."""
        try:
            return self.insert_aggregate(AGENCIES, doc, [event], now)
        except DuplicateKeyError:
            return None

    def agency(self, agency_id, history=False):
        return self.db[AGENCIES].find_one({"_id": agency_id}, None if history else SUMMARY)

    def agencies(self, *, kind=None, region=None, service_code=None, level=None, status=None, blacklisted=None,
                 q=None, after=None, limit=50):
        query = {}
        if kind is not None:
            query["kind"] = kind
        if region is not None:
            query["region_prefixes"] = region
        if service_code is not None:
            query["service_codes"] = service_code
        if level is not None:
            query["level"] = None if level == domain.UNRATED else level
        if status is not None:
            query["status"] = status
        if blacklisted is not None:
            query["blacklist"] = {"$ne": None} if blacklisted else None
        if q:
            query["name"] = {"$regex": re.escape(q), "$options": "i"}
        if after:
            query["_id"] = {"$gt": after}
        return list(self.db[AGENCIES].find(query, SUMMARY).sort("_id", ASCENDING).limit(limit))

    def candidates(self, service_code, region=None):
        """Active, unlisted agencies offering a service code (the line is checked by the caller)."""
        query = {"service_codes": service_code, "status": "active", "blacklist": None}
        if region:
            query["region_prefixes"] = region
        return list(self.db[AGENCIES].find(query, SUMMARY))

    def change_agency(self, current, changes, events, now, push=None):
        """Repo.update_aggregate plus `$push` for the history arrays, still one guarded write."""
        update = {"$set": dict(changes), "$push": dict(push or {}), "$inc": {"seq": len(events)}}
        doc = self._write(AGENCIES, {"_id": current["_id"], "seq": current["seq"]}, update, events, now)
        if doc is None:
            raise ConcurrentChange(f"agency {current['_id']} changed concurrently")
        return doc

    def listings_over(self, today_iso, limit=200):
        return list(self.db[AGENCIES].find({"blacklist.listed_to": {"$lt": today_iso}}, SUMMARY).limit(limit))

    def level_status_counts(self):
        counts = Counter()
        for doc in self.db[AGENCIES].find({}, {"level": 1, "status": 1, "blacklist": 1}):
            counts[(doc.get("level") or domain.UNRATED, domain.metric_status(doc))] += 1
        return counts

    # -- orders read model ---------------------------------------------------------------------
    def apply_order_event(self, event, closed, increments):
        """Applies one order or claim event to its order, once: the event id joins the order's
        `applied` list in the same write, guarded by the list's length as read. Returns False for
        a repeat. Events of one order may come in any order: closing is never undone and counters
        only add. Read-then-guarded-write rather than an upsert with `applied: {$ne: id}`: on
        FerretDB 1.24 an update whose filter matches nothing scans the collection (~90 ms at 5,000
        orders), while an `_id` read, an insert or a matching update take 1-12 ms."""
        data, event_id = event["data"], event["event_id"]
        orders = self.db[ORDERS]
        for _ in range(5):
            doc = orders.find_one({"_id": data["order_id"]})
            if doc is None:
                fresh = {"_id": data["order_id"], "agency_id": data["agency_id"], "enterprise_id": data["enterprise_id"],
                         "open": not closed, "closed": closed, "applied": [event_id],
                         "last_event_at": event["occurred_at"], **dict.fromkeys(COUNTERS, 0), **increments}
                try:
                    orders.insert_one(fresh)
                    return True
                except DuplicateKeyError:
                    continue  # another event of this new order got there first
            if event_id in doc["applied"]:
                return False
            update = {"$push": {"applied": event_id}, "$set": {"last_event_at": event["occurred_at"]}}
            if increments:
                update["$inc"] = dict(increments)
            if closed:
                update["$set"].update(open=False, closed=closed)
            guard = {"_id": doc["_id"], "applied": {"$size": len(doc["applied"])}}
            if orders.update_one(guard, update).modified_count:
                return True
        raise ConcurrentChange(f"order {data['order_id']} kept changing")  # the consumer retries later

    def open_orders(self, agency_id, limit=AFFECTED_ORDERS_LIMIT):
        return list(self.db[ORDERS].find({"agency_id": agency_id, "open": True}, {"enterprise_id": 1})
                    .sort("_id", ASCENDING).limit(limit))

    def refresh_service_records(self, now):
        """Recomputes every agency's service record from the orders and stores the ones that
        changed in the agency document (no event: it is evidence, not state). Reads then need no
        scan of the orders: FerretDB 1.24 uses no secondary index (a find by agency_id scans the
        collection) and its `$group` `$sum` of a field returned 0, so one scan is summed here."""
        grouped = {}
        projection = {"agency_id": 1, "open": 1, **dict.fromkeys(COUNTERS, 1)}
        for doc in self.db[ORDERS].find({}, projection):
            grouped.setdefault(doc["agency_id"], []).append(doc)
        changed = 0
        for agency in self.db[AGENCIES].find({}, {"record": 1}):
            record = domain.service_record(grouped.get(agency["_id"], []))
            if agency.get("record") != record:
                self.db[AGENCIES].update_one({"_id": agency["_id"]}, {"$set": {"record": record, "record_as_of": now}})
                changed += 1
        return changed

    def purge_idempotency_keys(self, before):
        return self.idempotency().delete_many({"created_at": {"$lt": before}}).deleted_count


class ProviderStore(MongoStore):
    repo_class = ProviderRepo
    outbox_collections = (AGENCIES,)
    indexes = {
        AGENCIES: [IndexModel([("region_prefixes", ASCENDING)]), IndexModel([("service_codes", ASCENDING)]),
                   IndexModel([("level", ASCENDING)]), IndexModel([("status", ASCENDING)]),
                   IndexModel([("blacklist.listed_to", ASCENDING)])],
        ORDERS: [IndexModel([("agency_id", ASCENDING), ("open", ASCENDING)])],
    }
