"""The documents service over real HTTP, on the real S3 gateway (scripts/stack.sh), RabbitMQ and
FerretDB: every accepted and refused kind of file (real samples made by the tests), the size limit
checked as the bytes stream in, who may read what (404 for anyone else), and the events.
The fixtures and helpers here are shared by the other test_documents_* modules."""
import hashlib
import select
import socket
import uuid
from datetime import datetime, timezone

import pytest
import requests
from nameko.testing.services import entrypoint_hook
from openapi_spec_validator import validate as validate_openapi

from ipvkit.events import new_event, parse
from services.documents.service import DocumentsService
from tests import document_samples as samples
from tests.conftest import dumps, s3_client

pytestmark = pytest.mark.integration

ENT, ENT2 = "91350100M000100Y43", "91310115MA1K3YJ15R"
AG, AG2 = "ag-1", "ag-2"


def order_placed(order_id, enterprise=ENT, agency=AG):
    return new_event(type="order.placed", producer="vouchers", aggregate_id=order_id, sequence=1, data={
        "programme_id": "p_1", "voucher_id": "v_1", "enterprise_id": enterprise, "order_id": order_id,
        "agency_id": agency, "service_code": "PAT-01", "price_fen": 1_000_000, "subsidy_fen": 500_000,
        "copay_fen": 500_000, "redemption_model": "agency_redeems", "deliver_by": "2026-09-30"},
        actor={"role": "enterprise", "id": enterprise}, now=datetime.now(timezone.utc))


class Documents:
    """HTTP calls to a running documents service, as a chosen principal."""

    def __init__(self, container, config, token):
        self.container, self.config, self.token = container, config, token
        self.base = f"http://{config['WEB_SERVER_ADDRESS']}"
        self.session = requests.Session()

    def __call__(self, method, path, role="officer", subject="o1", **kwargs):
        headers = kwargs.pop("headers", {})
        if role:
            headers.update(self.token(role, subject))
        return self.session.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def feed(self, handler, *events):
        with entrypoint_hook(self.container, handler) as hook:
            for e in events:
                hook(parse(dumps(e)))

    def order(self, enterprise=ENT, agency=AG):
        """An order this service has heard of (its `order.placed`), as the vouchers service places one."""
        order_id = f"o_{uuid.uuid4().hex[:20]}_{uuid.uuid4().hex[:8]}"
        self.feed("on_order_placed", order_placed(order_id, enterprise, agency))
        return order_id

    def upload(self, order_id, data, kind="deliverable", role="agency", subject=AG, filename="file.pdf",
               declared="application/pdf", **kwargs):
        return self("POST", "/api/v1/documents", role, subject, files={"file": (filename, data, declared)},
                    data={"kind": kind, "order_id": order_id}, **kwargs)

    def s3(self):
        return s3_client(self.config)


@pytest.fixture
def docs(container_factory, service_config, token):
    container = container_factory(DocumentsService, service_config)
    container.start()
    return Documents(container, service_config, token)


def bucket_keys(docs):
    return [o["Key"] for o in docs.s3().list_objects_v2(Bucket=docs.config["S3_BUCKET"]).get("Contents", [])]


def test_each_accepted_kind_is_judged_by_content_stored_with_its_hash_and_streams_back(docs, event_tap):
    tap = event_tap("documents", "document.uploaded")
    order_id = docs.order()
    for name, (make, media_type) in samples.ACCEPTED.items():
        data = make()
        # The name and the declared type say nothing true: the content decides.
        stored = docs.upload(order_id, data, filename=f"{name}.bin", declared="application/octet-stream")
        assert stored.status_code == 201, (name, stored.text)
        body = stored.json()
        assert (body["media_type"], body["size_bytes"], body["sha256"]) == (
            media_type, len(data), hashlib.sha256(data).hexdigest()), name
        assert (body["order_id"], body["kind"], body["uploader"], body["filename"], body["delivery"]) == (
            order_id, "deliverable", {"role": "agency", "id": AG}, f"{name}.bin", None)

        got = docs("GET", f"/api/v1/documents/{body['document_id']}/content", "enterprise", ENT)
        assert got.status_code == 200 and got.content == data, name
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Content-Length"] == str(len(data))
        assert got.headers["ETag"] == f'"{body["sha256"]}"' and got.headers["X-Content-SHA256"] == body["sha256"]
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert docs("GET", f"/api/v1/documents/{body['document_id']}", "auditor", "a1").json() == body

        event = tap.next()
        assert event["type"] == "document.uploaded" and event["aggregate_id"] == body["document_id"]
        assert event["actor"] == {"role": "agency", "id": AG}
        assert event["data"] == {"document_id": body["document_id"], "order_id": order_id, "kind": "deliverable",
                                 "sha256": body["sha256"], "size_bytes": len(data), "media_type": media_type,
                                 "uploader_role": "agency", "uploader_id": AG}
    listed = docs("GET", f"/api/v1/documents?order_id={order_id}", "enterprise", ENT).json()["items"]
    assert [d["media_type"] for d in listed] == [mt for _, mt in samples.ACCEPTED.values()]
    assert sorted(bucket_keys(docs)) == sorted(d["document_id"] for d in listed)


def test_each_refused_kind_is_a_415_with_its_reason_and_nothing_is_kept(docs, event_tap):
    tap = event_tap("documents", "#")
    order_id = docs.order()
    for name, (make, reason) in samples.REFUSED.items():
        refused = docs.upload(order_id, make(), filename="合同.pdf", declared="application/pdf")
        assert refused.status_code == 415, (name, refused.text)
        body = refused.json()
        assert (body["error"], body["reason"]) == ("unsupported_media_type", reason), name
        assert body["message"] and body["message_zh"], name
    assert docs("GET", f"/api/v1/documents?order_id={order_id}", "agency", AG).json()["items"] == []
    assert bucket_keys(docs) == []
    assert tap.drain(0.5) == []
    # Not multipart at all, or no file in it: said as plainly.
    as_json = docs("POST", "/api/v1/documents", "agency", AG, json={"kind": "contract", "order_id": order_id})
    assert as_json.status_code == 415 and as_json.json()["reason"] == "not_multipart"
    no_file = docs("POST", "/api/v1/documents", "agency", AG, files={"kind": (None, "contract"),
                                                                     "order_id": (None, order_id)})
    assert no_file.status_code == 400 and "file" in no_file.json()["fields"]
    empty = docs.upload(order_id, b"")
    assert empty.status_code == 400 and empty.json()["fields"] == {"file": ["the file is empty"]}
    wrong_kind = docs.upload(order_id, samples.pdf(), kind="selfie")
    assert wrong_kind.status_code == 400 and "kind" in wrong_kind.json()["fields"]


def exactly(size):
    """A real PDF of exactly `size` bytes."""
    padding = size - len(samples.pdf(padding=1))
    for _ in range(5):  # offsets in the file grow by a digit now and then: converge on the size
        data = samples.pdf(padding=padding)
        if len(data) == size:
            return data
        padding += size - len(data)
    raise AssertionError(f"no PDF of exactly {size} bytes")


def send_chunked_until_answered(docs, order_id, total):
    """Sends an upload of `total` bytes chunk by chunk over a raw socket and stops as soon as an
    answer arrives: (its status, the body bytes sent by then)."""
    host, port = docs.config["WEB_SERVER_ADDRESS"].split(":")
    auth = docs.token("agency", AG)["Authorization"]
    head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\ncontract\r\n"
            b"--b0undary\r\nContent-Disposition: form-data; name=\"order_id\"\r\n\r\n" + order_id.encode() +
            b"\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pdf\"\r\n\r\n%PDF-1.7\n")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /api/v1/documents HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
                     "Content-Type: multipart/form-data; boundary=b0undary\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        sent, piece = 0, head + b"x" * (64 * 1024 - len(head))
        while sent < total:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            readable, _, _ = select.select([sock], [], [], 0.005)
            if readable:
                return int(sock.recv(4096).split(b" ", 2)[1]), sent
            piece = b"x" * (64 * 1024)
    raise AssertionError(f"no answer after sending all {total} bytes")


def test_the_size_limit_is_checked_while_the_file_streams_in(container_factory, service_config, token):
    limit = 1024 * 1024
    service_config["DOCUMENT_MAX_BYTES"] = limit
    container = container_factory(DocumentsService, service_config)
    container.start()
    docs = Documents(container, service_config, token)
    order_id = docs.order()
    assert docs.upload(order_id, exactly(limit)).status_code == 201
    over = docs.upload(order_id, exactly(limit + 1))
    assert over.status_code == 413, over.text
    assert over.json()["error"] == "payload_too_large" and over.json()["limit_bytes"] == limit
    assert over.json()["message_zh"]

    # A body of 100 MB announced up front is refused before a byte of it is read; one sent without a
    # Content-Length (chunked) is refused as soon as the file passes the limit: the 413 arrives while
    # the sender is still sending.
    host, port = docs.config["WEB_SERVER_ADDRESS"].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /api/v1/documents HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: {docs.token('agency', AG)['Authorization']}\r\nContent-Length: {100 << 20}\r\n"
                     "Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    status, sent = send_chunked_until_answered(docs, order_id, total=100 << 20)
    assert status == 413
    assert sent < 10 * limit, f"the 413 came only after {sent} bytes of a body refusable after {limit}"
    assert len(docs("GET", f"/api/v1/documents?order_id={order_id}", "agency", AG).json()["items"]) == 1


def test_only_the_orders_parties_and_staff_see_a_file_and_anyone_else_gets_404(docs):
    order_id = docs.order(ENT, AG)
    other_order = docs.order(ENT2, AG2)
    doc = docs.upload(order_id, samples.pdf(), kind="contract", role="enterprise", subject=ENT).json()
    paths = [f"/api/v1/documents/{doc['document_id']}", f"/api/v1/documents/{doc['document_id']}/content",
             f"/api/v1/documents?order_id={order_id}"]
    for role, subject in (("enterprise", ENT), ("agency", AG), ("officer", "o1"), ("auditor", "a1")):
        for path in paths:
            assert docs("GET", path, role, subject).status_code == 200, (role, path)
    unknown = f"/api/v1/documents/d_{'0' * 24}"
    for role, subject in (("enterprise", ENT2), ("agency", AG2)):
        for path in paths + [unknown, paths[0] + "/verify"]:
            answer = docs("GET", path, role, subject)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found", (role, path)
        # Someone else's order takes no uploads from them either, said the same way as an unknown order.
        assert docs.upload(order_id, samples.pdf(), role=role, subject=subject).status_code == 404
        assert docs.upload(f"o_{'9' * 20}_00000000", samples.pdf(), role=role, subject=subject).status_code == 404
    assert docs("GET", paths[0], "ops", "ops1").status_code == 403  # a role that reads no files at all
    assert docs.upload(other_order, samples.pdf(), role="officer", subject="o1").status_code == 403


def test_the_openapi_document_describes_the_upload_and_the_download(docs):
    document = requests.get(docs.base + "/api/v1/openapi.json", timeout=10).json()
    validate_openapi(document)
    upload = document["paths"]["/api/v1/documents"]["post"]
    assert list(upload["requestBody"]["content"]) == ["multipart/form-data"]
    assert {"201", "413", "415"} <= set(upload["responses"])
    content = document["paths"]["/api/v1/documents/{document_id}/content"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/pdf", "image/jpeg", "image/png", "application/ofd", "application/xml"}


def test_a_retry_with_the_same_idempotency_key_stores_the_file_once(docs):
    order_id = docs.order()
    data = samples.pdf()
    first = docs.upload(order_id, data, headers={"Idempotency-Key": "upload-1"})
    again = docs.upload(order_id, data, headers={"Idempotency-Key": "upload-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other_file = docs.upload(order_id, samples.image("PNG"), headers={"Idempotency-Key": "upload-1"})
    assert other_file.status_code == 422 and other_file.json()["rule"] == "idempotency_key_reused"
    assert len(bucket_keys(docs)) == 1
