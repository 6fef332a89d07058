"""Documents through the whole path, with the real vouchers, documents and audit services on one
broker: an order's files are uploaded, the delivery names them, `order.delivered` carries their
SHA-256 into the audit ledger, the store holds them against deletion, and a file changed behind the
service's back is caught by its hash against the ledger."""
import hashlib
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from nameko.testing.services import entrypoint_hook
from pymongo import MongoClient

from ipvkit.events import new_event, parse
from services.documents.service import DocumentsService
from tests import document_samples as samples
from tests.conftest import dumps, eventually, free_port
from tests.integration.test_audit_reports import audit  # noqa: F401 - the fixture
from tests.integration.test_documents_api import Documents
from tests.integration.test_vouchers_api import ENT, EVIDENCE, NOW, vapi  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def world(vapi, audit, container_factory, service_config, token, mongo_uri):  # noqa: F811
    """vouchers (vapi), documents and audit, each with its own database, on the test vhost."""
    dbs = [service_config["MONGO_DB"] + suffix for suffix in ("_documents", "_audit")]
    ledger = audit(MONGO_DB=dbs[1], WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    config = dict(service_config, MONGO_DB=dbs[0], WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    container = container_factory(DocumentsService, config)
    container.start()
    yield vapi, Documents(container, config, token), ledger
    for db in dbs:
        MongoClient(mongo_uri).drop_database(db)


def placed_order(vapi, docs):
    pid = vapi.world()
    voucher = vapi.voucher(pid)
    order = vapi.order(voucher["voucher_id"]).json()
    # order.placed reaches the documents service through the broker, as in production.
    eventually("the documents service knows the order", lambda: docs(
        "GET", f"/api/v1/documents?order_id={order['order_id']}", "agency", "ag-1").status_code == 200)
    return voucher, order["order_id"]


def known_to_vouchers(vapi, ids):
    store = MongoClient(os.environ["MONGO_URI"])[vapi.container.config["MONGO_DB"]]["documents"]
    return store.count_documents({"_id": {"$in": list(ids)}}) == len(ids)


def test_a_delivery_names_its_documents_the_ledger_proves_them_and_a_changed_file_is_caught(world, event_tap):
    vapi, docs, ledger = world
    tap = event_tap("vouchers", "order.delivered")
    voucher, order_id = placed_order(vapi, docs)
    files = {"contract": samples.pdf(text="HT-2026-001"), "invoice": samples.einvoice_xml(),
             "payment_proof": samples.image("PNG"), "deliverable": samples.ofd()}
    ids = {}
    for kind, data in files.items():
        # The enterprise, a party to the order, uploads the proof of its payment; the agency the rest.
        role, subject = ("enterprise", ENT) if kind == "payment_proof" else ("agency", "ag-1")
        stored = docs.upload(order_id, data, kind=kind, role=role, subject=subject, filename=f"{kind}.bin")
        assert stored.status_code == 201, stored.text
        ids[kind] = stored.json()["document_id"]
    eventually("the vouchers service heard of the uploads", lambda: known_to_vouchers(vapi, ids.values()))

    evidence = {k: v for k, v in EVIDENCE.items() if k != "deliverable_sha256"}
    delivered = vapi("POST", f"/api/v1/orders/{order_id}/deliver", "agency", "ag-1",
                     json=dict(evidence, documents=ids))
    assert delivered.status_code == 200, delivered.text
    sha = {kind: hashlib.sha256(data).hexdigest() for kind, data in files.items()}
    expected = sorted(({"kind": k, "document_id": ids[k], "sha256": sha[k]} for k in ids), key=lambda d: d["kind"])
    assert delivered.json()["documents"] == expected
    assert delivered.json()["evidence"]["deliverable_sha256"] == sha["deliverable"]
    event = tap.next()
    assert (event["type"], event["version"]) == ("order.delivered", 2)
    assert event["data"]["documents"] == expected

    # The documents service hears of the delivery: each file is recorded as delivered and held.
    eventually("the documents service recorded the delivery", lambda: all(
        docs("GET", f"/api/v1/documents/{i}", "auditor", "a1").json()["delivery"] for i in ids.values()))
    ledger.wait_projected(7)  # programme created and opened, voucher, order, 4 uploads ... and the delivery
    eventually("the delivery is in the ledger", lambda: any(
        e["type"] == "order.delivered" for e in ledger.get("/api/v1/audit/entries", limit=50).json()["items"]))
    for kind, document_id in ids.items():
        verified = docs("GET", f"/api/v1/documents/{document_id}/verify", "officer", "o1").json()
        assert verified["matches_upload"] is True and verified["matches_ledger"] is True, verified
        assert verified["ledger"]["state"] == "matches" and verified["ledger"]["sha256"] == sha[kind]
        assert verified["ledger"]["event_id"] == event["event_id"]

    s3, bucket = docs.s3(), docs.config["S3_BUCKET"]
    deliverable = docs("GET", f"/api/v1/documents/{ids['deliverable']}", "auditor", "a1").json()
    version = MongoClient(os.environ["MONGO_URI"])[docs.config["MONGO_DB"]]["documents"].find_one(
        {"_id": ids["deliverable"]})["version_id"]
    # Object lock: the store itself refuses to delete a delivered file, whoever holds its keys.
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=ids["deliverable"], VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A new object written under the same key changes nothing the service serves: it reads its version.
    s3.put_object(Bucket=bucket, Key=ids["deliverable"], Body=b"%PDF-1.7 forged")
    served = docs("GET", f"/api/v1/documents/{ids['deliverable']}/content", "enterprise", ENT)
    assert served.content == files["deliverable"] and served.headers["X-Content-SHA256"] == deliverable["sha256"]

    # A file changed on the store's disk behind the service's back: its hash no longer matches.
    on_disk = Path(os.environ["IPV_S3_DATA_DIR"]) / bucket / ids["contract"]
    on_disk.write_bytes(on_disk.read_bytes().replace(b"HT-2026-001", b"HT-2026-009"))
    verified = docs("GET", f"/api/v1/documents/{ids['contract']}/verify", "auditor", "a1").json()
    assert verified["stored_sha256"] == hashlib.sha256(on_disk.read_bytes()).hexdigest() != sha["contract"]
    assert (verified["matches_upload"], verified["matches_ledger"], verified["ledger"]["state"]) == (
        False, False, "differs")
    # ... and a forger who also rewrites the metadata's hash is caught by the ledger, which he cannot rewrite.
    MongoClient(os.environ["MONGO_URI"])[docs.config["MONGO_DB"]]["documents"].update_one(
        {"_id": ids["contract"]}, {"$set": {"sha256": verified["stored_sha256"]}})
    verified = docs("GET", f"/api/v1/documents/{ids['contract']}/verify", "auditor", "a1").json()
    assert (verified["matches_upload"], verified["matches_ledger"], verified["ledger"]["sha256"]) == (
        True, False, sha["contract"])


def test_a_delivery_naming_a_missing_foreign_or_mislabelled_document_is_refused(world):
    vapi, docs, _ = world
    voucher, order_id = placed_order(vapi, docs)
    other = vapi.order(voucher["voucher_id"], price=200_000).json()["order_id"]
    eventually("the documents service knows the second order", lambda: docs(
        "GET", f"/api/v1/documents?order_id={other}", "agency", "ag-1").status_code == 200)
    own = docs.upload(order_id, samples.pdf(), kind="contract").json()["document_id"]
    elsewhere = docs.upload(other, samples.pdf(), kind="invoice").json()["document_id"]
    # A document.uploaded naming this order but someone who is not its party (as a rogue or confused
    # producer might send): the vouchers service must not take it as this order's.
    rogue = "d_" + "e" * 24
    with entrypoint_hook(vapi.container, "on_document") as hook:
        hook(parse(dumps(new_event(type="document.uploaded", producer="documents", aggregate_id=rogue, sequence=1,
                                   actor={"role": "agency", "id": "ag-9"}, now=NOW, data={
                                       "document_id": rogue, "order_id": order_id, "kind": "deliverable",
                                       "sha256": "f" * 64, "size_bytes": 10, "media_type": "application/pdf",
                                       "uploader_role": "agency", "uploader_id": "ag-9"}))))
    eventually("the vouchers service heard of the uploads", lambda: known_to_vouchers(vapi, [own, elsewhere]))

    cases = {
        "foreign uploader": ({"contract": own, "deliverable": rogue}, "documents.deliverable", "not uploaded for this order"),
        "another order": ({"invoice": elsewhere}, "documents.invoice", "not uploaded for this order"),
        "missing": ({"payment_proof": "d_" + "0" * 24}, "documents.payment_proof", "no document"),
        "wrong kind": ({"invoice": own}, "documents.invoice", "uploaded as contract"),
    }
    for label, (named, field, reason) in cases.items():
        refused = vapi("POST", f"/api/v1/orders/{order_id}/deliver", "agency", "ag-1",
                       json=dict(EVIDENCE, documents=named))
        assert refused.status_code == 422, (label, refused.text)
        assert refused.json()["rule"] == "delivery_documents" and reason in refused.json()["fields"][field][0], label
    # Nothing named and no hash typed in: the deliverable must be proven one way or the other.
    no_proof = {k: v for k, v in EVIDENCE.items() if k != "deliverable_sha256"}
    refused = vapi("POST", f"/api/v1/orders/{order_id}/deliver", "agency", "ag-1", json=no_proof)
    assert refused.status_code == 422 and "deliverable_sha256" in refused.json()["fields"]
    assert vapi("GET", f"/api/v1/orders/{order_id}", "agency", "ag-1").json()["state"] == "placed"
    # A delivery as before (references and a typed hash, no uploads) still works: v1 clients keep working.
    kept = vapi("POST", f"/api/v1/orders/{order_id}/deliver", "agency", "ag-1", json=EVIDENCE)
    assert kept.status_code == 200 and kept.json()["documents"] == []
