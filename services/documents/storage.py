"""The documents service's storage: metadata in its own database, bytes in S3 object storage.

Order of writes for an upload: the object first (key = the document id, never overwriting:
`If-None-Match: *`, with the SHA-256 the service computed, which the store checks against the
bytes it received), the metadata second (with its `document.uploaded` event in the outbox, one
insert). Only metadata makes a document exist: a crash between the two leaves an object nothing
references, which the orphan sweep deletes once it is older than any upload in flight.

The bucket has S3 object lock (so versioning) enabled. The metadata keeps the object's version
id and every read names it, so a later write to the same key (by anyone holding the store's
credentials) never changes what the service serves; a document a delivery names gets a legal
hold on that version, which the store enforces: nobody can delete it.
"""
import base64
import logging

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from nameko.extensions import DependencyProvider
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from ipvkit.config import required
from ipvkit.storage import MongoStore, Repo
from services.documents import metrics

log = logging.getLogger(__name__)

DOCUMENTS, ORDERS = "documents", "orders"


class StorageError(Exception):
    """The object store failed or refused; the caller answers 503 and nothing is referenced."""


class AlreadyStored(Exception):
    """An object with this key exists: it is never overwritten."""


class Missing(Exception):
    """No such object (or version) in the store."""


MISSING_CODES = ("NoSuchKey", "NoSuchVersion", "404", "NotFound")


# -- metadata ---------------------------------------------------------------------------------------
class DocumentRepo(Repo):
    def insert_document(self, doc, event, now):
        """The metadata with its event; None if a document with this id exists."""
        try:
            return self.insert_aggregate(DOCUMENTS, doc, [event], now)
        except DuplicateKeyError:
            return None

    def document(self, document_id):
        return self.db[DOCUMENTS].find_one({"_id": document_id}, {"outbox": 0})

    def documents_of(self, order_id, limit=200):
        return list(self.db[DOCUMENTS].find({"order_id": order_id}, {"outbox": 0})
                    .sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def known(self, document_ids):
        """Which of these ids have metadata (the sweep keeps their objects)."""
        return {d["_id"] for d in self.db[DOCUMENTS].find({"_id": {"$in": list(document_ids)}}, {"_id": 1})}

    def record_delivery(self, document_id, delivery):
        """What `order.delivered` recorded about this document (first delivery wins: an order is
        delivered once). Returns the document, or None if there is no such document."""
        self.db[DOCUMENTS].update_one({"_id": document_id, "delivery": {"$exists": False}},
                                      {"$set": {"delivery": delivery}})
        return self.document(document_id)

    def bytes_stored(self):
        # One accumulator: FerretDB 1.24's $group computes only its first.
        result = list(self.db[DOCUMENTS].aggregate([{"$group": {"_id": None, "total": {"$sum": "$size_bytes"}}}]))
        return result[0]["total"] if result else 0

    # -- the read model of orders (fed by order.placed) --------------------------------------------
    def apply_order(self, order_id, enterprise_id, agency_id):
        """Idempotent: an order's parties never change once placed."""
        self.db[ORDERS].update_one({"_id": order_id}, {"$set": {"enterprise_id": enterprise_id,
                                                               "agency_id": agency_id}}, upsert=True)

    def order(self, order_id):
        return self.db[ORDERS].find_one({"_id": order_id})

    def purge_idempotency_keys(self, before):
        return self.idempotency().delete_many({"created_at": {"$lt": before}}).deleted_count


class DocumentStore(MongoStore):
    repo_class = DocumentRepo
    outbox_collections = (DOCUMENTS,)
    indexes = {DOCUMENTS: [IndexModel([("order_id", ASCENDING), ("created_at", ASCENDING)])]}


# -- objects ----------------------------------------------------------------------------------------
class Objects:
    """Verbs on the bucket. Every failure of the store is counted and raised as StorageError."""

    def __init__(self, client, bucket, object_lock):
        self.client, self.bucket, self.object_lock = client, bucket, object_lock

    def _call(self, operation, method, **kwargs):
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            if code == "PreconditionFailed":
                raise AlreadyStored(kwargs.get("Key"))
            if code in MISSING_CODES:
                raise Missing(kwargs.get("Key"))
            metrics.STORAGE_ERRORS.labels(operation).inc()
            log.warning("object storage %s failed: %r", operation, exc)
            raise StorageError(f"object storage {operation} failed: {exc}") from exc

    def put(self, key, stream, size, sha256_digest, media_type):
        """Stores a new object from `stream`; returns its version id. Never overwrites."""
        stream.seek(0)
        answer = self._call("put", "put_object", Key=key, Body=stream, ContentLength=size, ContentType=media_type,
                            ChecksumSHA256=base64.b64encode(sha256_digest).decode(), IfNoneMatch="*")
        return answer.get("VersionId")

    def version_with(self, key, sha256_digest):
        """The version id of the object under `key` if its content has this SHA-256, else None."""
        answer = self._call("head", "head_object", Key=key, ChecksumMode="ENABLED")
        if answer.get("ChecksumSHA256") == base64.b64encode(sha256_digest).decode():
            return answer.get("VersionId")
        return None

    def open(self, key, version_id):
        """(streaming body, length) of one version of an object."""
        kwargs = {"Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        answer = self._call("get", "get_object", **kwargs)
        return answer["Body"], answer["ContentLength"]

    def hold(self, key, version_id):
        """A legal hold: the store refuses to delete this version until it is lifted. A bucket
        without object lock (S3_OBJECT_LOCK=false) has only the service's own rule."""
        if not self.object_lock:
            return
        kwargs = {"Key": key, "LegalHold": {"Status": "ON"}}
        if version_id:
            kwargs["VersionId"] = version_id
        self._call("hold", "put_object_legal_hold", **kwargs)

    def keys_older_than(self, cutoff, after=None, limit=1000):
        """(keys last written before the POSIX time `cutoff`, the key to go on from or None), one
        page of up to `limit` keys from key `after`."""
        kwargs = {"MaxKeys": limit}
        if after:
            kwargs["StartAfter"] = after
        answer = self._call("list", "list_objects_v2", **kwargs)
        contents = answer.get("Contents", [])
        keys = [obj["Key"] for obj in contents if obj["LastModified"].timestamp() < cutoff]
        return keys, (contents[-1]["Key"] if answer.get("IsTruncated") and contents else None)

    def delete_all_versions(self, key):
        """Removes an orphan completely (an orphan never had a hold: only delivered documents do)."""
        versions = self._call("list", "list_object_versions", Prefix=key)
        for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            if entry["Key"] == key:
                self._call("delete", "delete_object", Key=key, VersionId=entry["VersionId"])


class ObjectStore(DependencyProvider):
    """An S3 client built once; the bucket is created at start if it is missing (with object
    lock, which only a new bucket can get); production buckets are made by ops the same way."""

    readiness_name = "object_storage"

    def setup(self):
        config = self.container.config
        self.bucket = required(config, "S3_BUCKET")
        self.object_lock = str(config.get("S3_OBJECT_LOCK", "true")).lower() == "true"
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=config.get("S3_ENDPOINT_URL") or None, region_name=config.get("S3_REGION") or "us-east-1",
            aws_access_key_id=required(config, "S3_ACCESS_KEY"), aws_secret_access_key=required(config, "S3_SECRET_KEY"),
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                          retries={"max_attempts": 3, "mode": "standard"},
                          request_checksum_calculation="when_required", response_checksum_validation="when_required"))

    def start(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            log.info("creating bucket %s (object lock %s)", self.bucket, "on" if self.object_lock else "off")
            self.client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=self.object_lock)

    def readiness(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except (ClientError, BotoCoreError):
            return False

    def get_dependency(self, worker_ctx):
        return Objects(self.client, self.bucket, self.object_lock)
