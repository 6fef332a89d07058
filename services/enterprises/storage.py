"""The enterprises service's storage: its collections, their indexes, and its domain verbs."""
import hashlib
import re
import uuid

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from ipvkit.storage import MongoStore, Repo

ENTERPRISES, QUALIFICATIONS, NOTIFICATIONS = "enterprises", "qualifications", "notifications"


class EnterpriseRepo(Repo):
    # -- enterprises -------------------------------------------------------------------------
    def register(self, doc, event, now):
        """Returns the stored document, or None if the credit code is already registered."""
        try:
            return self.insert_aggregate(ENTERPRISES, doc, [event], now)
        except DuplicateKeyError:
            return None

    def change_enterprise(self, current, changes, event, now):
        return self.update_aggregate(ENTERPRISES, current, changes, [event], now)

    def enterprise(self, enterprise_id):
        return self.db[ENTERPRISES].find_one({"_id": enterprise_id})

    def enterprises(self, *, region=None, industry=None, size=None, q=None, after=None, limit=50):
        query = {}
        for key, value in (("region", region), ("industry", industry), ("size", size)):
            if value is not None:
                query[key] = value
        if q:
            query["name"] = {"$regex": re.escape(q), "$options": "i"}
        if after:
            query["_id"] = {"$gt": after}
        return list(self.db[ENTERPRISES].find(query).sort("_id", ASCENDING).limit(limit))

    # -- qualifications ----------------------------------------------------------------------
    @staticmethod
    def new_qualification_id():
        return "q_" + uuid.uuid4().hex[:20]

    def add_qualification(self, doc, event, now):
        """Returns the stored document, or None if that certificate is already recorded."""
        try:
            return self.insert_aggregate(QUALIFICATIONS, doc, [event], now)
        except DuplicateKeyError:
            return None

    def qualification(self, enterprise_id, qualification_id):
        return self.db[QUALIFICATIONS].find_one({"_id": qualification_id, "enterprise_id": enterprise_id})

    def qualifications(self, enterprise_id):
        return list(self.db[QUALIFICATIONS].find({"enterprise_id": enterprise_id}).sort("valid_from", ASCENDING))

    def change_qualification(self, current, changes, event, now):
        return self.update_aggregate(QUALIFICATIONS, current, changes, [event], now)

    def active_ending_before(self, day_iso, limit=500):
        return list(self.db[QUALIFICATIONS].find(
            {"status": "active", "valid_to": {"$lt": day_iso}}).limit(limit))

    # -- inbox ---------------------------------------------------------------------------------
    @staticmethod
    def notification_id(event, enterprise_id):
        # Derived from the event, so a redelivered event maps to the same notification; it sorts
        # by time so the inbox pages newest first.
        digest = hashlib.sha256(f"{event['event_id']}|{enterprise_id}".encode()).hexdigest()[:16]
        return f"{event['occurred_at']}|{digest}"

    def add_notification(self, doc):
        """False when this event already notified this enterprise (a redelivery)."""
        try:
            self.db[NOTIFICATIONS].insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def notifications(self, enterprise_id, *, unread=None, after=None, limit=50):
        query = {"enterprise_id": enterprise_id}
        if unread is not None:
            query["read"] = not unread
        if after:
            query["_id"] = {"$lt": after}
        return list(self.db[NOTIFICATIONS].find(query).sort("_id", DESCENDING).limit(limit))

    def mark_read(self, enterprise_id, notification_id):
        return self.db[NOTIFICATIONS].find_one_and_update(
            {"_id": notification_id, "enterprise_id": enterprise_id}, {"$set": {"read": True}})

    def purge_idempotency_keys(self, before):
        return self.idempotency().delete_many({"created_at": {"$lt": before}}).deleted_count


class EnterpriseStore(MongoStore):
    repo_class = EnterpriseRepo
    outbox_collections = (ENTERPRISES, QUALIFICATIONS)
    indexes = {
        ENTERPRISES: [IndexModel([("region", ASCENDING)]), IndexModel([("industry", ASCENDING)])],
        QUALIFICATIONS: [
            IndexModel([("enterprise_id", ASCENDING)]),
            IndexModel([("tier", ASCENDING), ("certificate_no", ASCENDING)], unique=True),
            IndexModel([("status", ASCENDING), ("valid_to", ASCENDING)]),
        ],
        NOTIFICATIONS: [IndexModel([("enterprise_id", ASCENDING), ("read", ASCENDING)])],
    }
