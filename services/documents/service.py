"""The documents service: entrypoints only. What a file is and who may see it: domain.py; reading
an upload as it streams: upload.py; metadata and objects: storage.py."""
import hashlib
import logging
import re
import uuid
from urllib.parse import quote

from eventlet import tpool
from marshmallow import RAISE, Schema, ValidationError, validate
from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy
from nameko.timer import timer
from werkzeug.wrappers import Response

from ipvkit import contracts  # noqa: F401 - registers every event schema
from ipvkit.clock import Clock, utc_iso
from ipvkit.consumer import Permanent, consume
from ipvkit.contracts.common import ID
from ipvkit.contracts.document import KINDS, MEDIA_TYPES
from ipvkit.errors import (ApiError, BadRequest, NotFound, PayloadTooLarge, RuleRefused, Unavailable,
                           UnsupportedMediaType)
from ipvkit.http import ServiceBase, api
from ipvkit.rpc import ask as rpc_ask
from ipvkit.text import Text
from services.documents import domain, metrics
from services.documents import schemas as s
from services.documents.storage import AlreadyStored, DocumentStore, Missing, ObjectStore, StorageError
from services.documents.upload import read_upload

log = logging.getLogger(__name__)

NAME = "documents"
READERS = domain.PARTIES + domain.READERS_STAFF
CHUNK = 256 * 1024
SAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069\\/]")


class _FormFields(Schema):
    """The text fields of an upload, as marshmallow checks every other body."""
    kind = Text(required=True, validate=validate.OneOf(KINDS))
    order_id = Text(required=True, validate=ID)


def document_view(doc):
    delivery = doc.get("delivery")
    return {"document_id": doc["_id"], "order_id": doc["order_id"], "kind": doc["kind"],
            "media_type": doc["media_type"], "size_bytes": doc["size_bytes"], "sha256": doc["sha256"],
            "filename": doc.get("filename"), "uploader": {"role": doc["uploader_role"], "id": doc["uploader_id"]},
            "created_at": utc_iso(doc["created_at"]),
            "delivery": dict(delivery, recorded_at=utc_iso(delivery["recorded_at"])) if delivery else None}


def clean_filename(name):
    """The uploader's file name, for display and downloads only: no path, no control characters or
    bidirectional overrides (a name that reads backwards hides its real ending), at most 200 characters."""
    if not name:
        return None
    name = SAFE_FILENAME.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()[:200]
    return name or None


def content_disposition(doc, extension):
    name = doc.get("filename") or f"{doc['_id']}.{extension}"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


EXTENSIONS = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png", "application/ofd": "ofd",
              "application/xml": "xml"}


class DocumentsService(ServiceBase):
    name = NAME
    store = DocumentStore()
    objects = ObjectStore()
    clock = Clock()
    config = Config()
    audit = RpcProxy("audit")

    @property
    def max_bytes(self):
        return int(self.config.get("DOCUMENT_MAX_BYTES") or 20 * 1024 * 1024)

    # -- upload --------------------------------------------------------------------------------
    @api("POST", "/api/v1/documents", roles=domain.PARTIES, stream=s.UploadForm, response=s.DocumentOut, status=201,
         summary="Upload a file for an order (multipart/form-data: file, kind, order_id); the order's enterprise or agency")
    def upload(self, call):
        key = call.request.headers.get("Idempotency-Key")  # its form is checked by ipvkit.http already
        try:
            upload = read_upload(call.request, self.max_bytes)
        except ApiError as exc:
            metrics.UPLOADS.labels({PayloadTooLarge: "too_large", UnsupportedMediaType: "refused_type"}.get(
                type(exc), "invalid")).inc()
            raise
        try:
            return 201, document_view(self._store_upload(call, upload, key))
        finally:
            upload.close()

    def _store_upload(self, call, upload, key):
        principal = call.principal
        try:
            form = _FormFields(unknown=RAISE).load(upload.fields)
        except ValidationError as exc:
            metrics.UPLOADS.labels("invalid").inc()
            raise BadRequest("invalid body", fields=exc.messages)
        if not domain.party_of(self.store.order(form["order_id"]), principal):
            metrics.UPLOADS.labels("not_found").inc()
            raise NotFound(f"no order {form['order_id']} of yours (a new order is known here within seconds)")
        try:
            # Parsing is CPU work (pypdf is pure Python): in a real thread, so other requests keep being served.
            media_type = tpool.execute(domain.detect, upload.stream, upload.size,
                                       max_zip_bytes=self.max_bytes * domain.MAX_ZIP_RATIO)
        except domain.Refused as refused:
            metrics.UPLOADS.labels("refused_type").inc()
            raise UnsupportedMediaType(refused.message, reason=refused.reason, message_zh=refused.message_zh)
        # With an Idempotency-Key the id comes from it, so a retry after a crash finds its first run's work.
        seed = f"{principal.role}:{principal.id}:{key}" if key else None
        document_id = "d_" + (hashlib.sha256(seed.encode()).hexdigest() if seed else uuid.uuid4().hex)[:24]
        earlier = self.store.document(document_id)
        if earlier is not None:
            return self._same_upload(earlier, upload, form)
        try:
            try:
                version_id = self.objects.put(document_id, upload.stream, upload.size, upload.digest, media_type)
            except AlreadyStored:  # an earlier run with this key stored the object, then crashed before the metadata
                version_id = self.objects.version_with(document_id, upload.digest)
                if version_id is None:
                    metrics.UPLOADS.labels("invalid").inc()
                    raise RuleRefused("idempotency_key_reused", "this Idempotency-Key was used for a different file")
        except StorageError:
            metrics.UPLOADS.labels("storage_error").inc()
            raise Unavailable("object storage is unavailable; retry", message_zh="文件存储暂不可用，请稍后重试")
        now = self.clock.now()
        data = {"document_id": document_id, "order_id": form["order_id"], "kind": form["kind"],
                "sha256": upload.sha256, "size_bytes": upload.size, "media_type": media_type,
                "uploader_role": principal.role, "uploader_id": principal.id}
        event = self._event(call, "document.uploaded", document_id, 1, data)
        doc = dict(data, _id=document_id, version_id=version_id, filename=clean_filename(upload.filename),
                   created_at=now, upload_event_id=event["event_id"])
        del doc["document_id"]
        stored = self.store.insert_document(doc, event, now)
        if stored is None:  # the same request, retried while the first was running
            return self._same_upload(self.store.document(document_id), upload, form)
        metrics.UPLOADS.labels("stored").inc()
        metrics.BYTES_STORED.inc(upload.size)
        return stored

    @staticmethod
    def _same_upload(earlier, upload, form):
        if (earlier["sha256"], earlier["order_id"], earlier["kind"]) != (upload.sha256, form["order_id"], form["kind"]):
            raise RuleRefused("idempotency_key_reused", "this Idempotency-Key was used for a different upload")
        return earlier

    # -- reading -------------------------------------------------------------------------------
    def _readable(self, call):
        """The document, if the caller may read it: 404 otherwise, so ids cannot be probed."""
        document_id = call.path["document_id"]
        doc = self.store.document(document_id)
        if doc is None or not domain.may_read(self.store.order(doc["order_id"]), call.principal):
            raise NotFound(f"no document {document_id}")
        return doc

    @api("GET", "/api/v1/documents", roles=READERS, query=s.DocumentQuery, response=s.DocumentList,
         summary="An order's documents, oldest first")
    def list_documents(self, call):
        order_id = call.query["order_id"]
        if not domain.may_read(self.store.order(order_id), call.principal):
            raise NotFound(f"no order {order_id}")
        return {"items": [document_view(d) for d in self.store.documents_of(order_id)]}

    @api("GET", "/api/v1/documents/<document_id>", roles=READERS, response=s.DocumentOut,
         summary="A document's metadata")
    def get_document(self, call):
        return document_view(self._readable(call))

    @api("GET", "/api/v1/documents/<document_id>/content", roles=READERS, other_types=MEDIA_TYPES,
         summary="The file itself, streamed, with its SHA-256 as ETag and X-Content-SHA256")
    def content(self, call):
        doc = self._readable(call)
        try:
            body, length = self.objects.open(doc["_id"], doc["version_id"])
        except (StorageError, Missing):
            raise Unavailable("the file cannot be read from object storage right now; retry",
                              message_zh="文件暂时无法读取，请稍后重试")

        def chunks():
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()
        headers = {"Content-Length": str(length), "ETag": f'"{doc["sha256"]}"', "X-Content-SHA256": doc["sha256"],
                   "Content-Disposition": content_disposition(doc, EXTENSIONS[doc["media_type"]]),
                   "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=0"}
        return Response(chunks(), status=200, headers=headers, content_type=doc["media_type"], direct_passthrough=True)

    @api("GET", "/api/v1/documents/<document_id>/verify", roles=READERS, response=s.VerifyOut,
         summary="Re-hash the stored file and compare with the upload and with the audit ledger")
    def verify(self, call):
        doc = self._readable(call)
        stored_sha, stored_size = None, None
        try:
            body, _ = self.objects.open(doc["_id"], doc["version_id"])
            digest, stored_size = hashlib.sha256(), 0
            try:
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
                    stored_size += len(chunk)
            finally:
                body.close()
            stored_sha = digest.hexdigest()
        except Missing:
            pass  # the object is gone: it matches nothing
        except StorageError:
            raise Unavailable("object storage is unavailable; retry")
        ledger = self._ledger(doc)
        matches_ledger = None
        if ledger["sha256"] is not None:
            matches_ledger = ledger["sha256"] == doc["sha256"] == stored_sha
            ledger["state"] = "matches" if matches_ledger else "differs"
        return {"document_id": doc["_id"], "sha256": doc["sha256"], "stored_sha256": stored_sha,
                "size_bytes": doc["size_bytes"], "stored_size_bytes": stored_size,
                "matches_upload": stored_sha == doc["sha256"] and stored_size == doc["size_bytes"],
                "ledger": ledger, "matches_ledger": matches_ledger, "verified_at": utc_iso(self.clock.now())}

    def _ledger(self, doc):
        """What the audit ledger recorded about this file: the `order.delivered` that paid against
        it, or before delivery its `document.uploaded`."""
        delivery = doc.get("delivery")
        event_id = delivery["event_id"] if delivery else doc["upload_event_id"]
        out = {"state": "not_in_ledger", "position": None, "event_id": event_id, "sha256": None,
               "detail": "delivered" if delivery else "not delivered yet: compared with its upload's entry"}
        try:
            entry = self._ask_audit("ledger_entry", event_id)
        except Unavailable as exc:
            return dict(out, state="unavailable", detail=exc.message)
        if entry is None:
            return dict(out, detail="the ledger has no entry for this event (yet)")
        data = entry["event"]["data"]
        if delivery:
            found = [d["sha256"] for d in data.get("documents", []) if d["document_id"] == doc["_id"]]
            sha = found[0] if found else None
        else:
            sha = data.get("sha256") if data.get("document_id") == doc["_id"] else None
        if sha is None:
            return dict(out, position=entry["position"], detail="the ledger entry does not name this document")
        return dict(out, position=entry["position"], sha256=sha,
                    detail=f"{entry['type']} at ledger position {entry['position']}")

    def _ask_audit(self, method, *args):
        return rpc_ask(self.audit, method, *args, amqp_uri=self.config["AMQP_URI"],
                       timeout=float(self.config.get("DOCUMENT_RPC_TIMEOUT_S") or 5),
                       absent="the audit service is not running, so the ledger cannot be compared")

    # -- events --------------------------------------------------------------------------------
    @consume([("vouchers", "order.placed")])
    def on_order_placed(self, event):
        """Who may upload and read an order's files: its enterprise and its agency."""
        data = event["data"]
        self.store.apply_order(data["order_id"], data["enterprise_id"], data["agency_id"])

    @consume([("vouchers", "order.delivered")])
    def on_order_delivered(self, event):
        """A delivery names documents: each gets a legal hold in the store (nobody can delete it)
        and the delivery is recorded beside it (what the ledger should say about it). The hold comes
        first, so a recorded delivery always means a held object; both are idempotent."""
        data = event["data"]
        for named in data.get("documents", []):  # v1 deliveries named none
            doc = self.store.document(named["document_id"])
            if doc is None:
                raise Permanent(f"order {data['order_id']} names document {named['document_id']}, which is not stored here")
            try:
                self.objects.hold(doc["_id"], doc["version_id"])
            except Missing:
                raise Permanent(f"the object of document {doc['_id']} is missing from object storage")
            self.store.record_delivery(doc["_id"], {"order_id": data["order_id"], "event_id": event["event_id"],
                                                    "sha256": named["sha256"], "kind": named["kind"],
                                                    "recorded_at": self.clock.now()})

    # -- housekeeping --------------------------------------------------------------------------
    @timer(interval=300)
    def sweep_orphans(self):
        """Deletes objects no metadata references: a crash between writing an object and its
        metadata leaves one. Only objects older than DOCUMENT_ORPHAN_AGE_S (longer than any upload
        takes), so an upload in flight is never touched; a referenced document always has metadata."""
        cutoff = self.clock.now().timestamp() - int(self.config.get("DOCUMENT_ORPHAN_AGE_S") or 3600)
        deleted, after = 0, None
        while True:
            keys, after = self.objects.keys_older_than(cutoff, after)
            known = self.store.known(keys) if keys else set()
            for key in keys:
                if key not in known:
                    log.warning("deleting orphan object %s (no metadata references it)", key)
                    self.objects.delete_all_versions(key)
                    deleted += 1
            if after is None:
                return deleted

    @timer(interval=60)
    def refresh_metrics(self):
        metrics.BYTES_STORED.set(self.store.bytes_stored())

    @timer(interval=1)
    def relay_outbox(self):
        """Publishes events a crash or a broker outage left in the outbox."""
        return self.store.relay_due(self.clock.now())


SERVICE = DocumentsService  # what `nameko run` starts
