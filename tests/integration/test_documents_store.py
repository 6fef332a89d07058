"""The object store's side of the documents service, on the real S3 gateway: an object a crash left
without metadata is never referenced and is swept once it is old enough; an object is never
overwritten; a retry after such a crash finishes the first run's upload instead of storing twice."""
import base64
import hashlib
import re
from datetime import datetime, timezone

import pytest
import requests
from nameko.testing.services import entrypoint_hook, replace_dependencies

from ipvkit.clock import FixedClock
from services.documents.service import DocumentsService
from tests import document_samples as samples
from tests.conftest import remove_bucket
from tests.integration.test_documents_api import AG, Documents, bucket_keys

pytestmark = pytest.mark.integration


def started(container_factory, service_config, token, **config):
    service_config.update(config)
    container = container_factory(DocumentsService, service_config)
    container.start()
    return Documents(container, service_config, token)


def sweep(docs):
    with entrypoint_hook(docs.container, "sweep_orphans") as hook:
        return hook()


def test_an_object_without_metadata_is_never_referenced_and_is_swept_once_old(container_factory, service_config,
                                                                              token):
    clock = FixedClock(datetime.now(timezone.utc))
    container = container_factory(DocumentsService, service_config)
    replace_dependencies(container, clock=clock)
    container.start()
    docs = Documents(container, service_config, token)
    order_id = docs.order()
    kept = docs.upload(order_id, samples.pdf()).json()["document_id"]
    orphan = "d_" + "0" * 24  # what a crash between the object write and the metadata write leaves
    docs.s3().put_object(Bucket=docs.config["S3_BUCKET"], Key=orphan, Body=samples.pdf())
    assert docs("GET", f"/api/v1/documents/{orphan}", "auditor", "a1").status_code == 404
    assert [d["document_id"] for d in docs("GET", f"/api/v1/documents?order_id={order_id}").json()["items"]] == [kept]
    assert sweep(docs) == 0                   # younger than DOCUMENT_ORPHAN_AGE_S: could be an upload in flight
    clock.advance(hours=2)
    assert sweep(docs) == 1
    assert bucket_keys(docs) == [kept]        # the referenced one is untouched
    assert docs("GET", f"/api/v1/documents/{kept}/content", "agency", AG).status_code == 200


def test_an_object_is_never_overwritten_and_a_retry_adopts_its_own_first_write(container_factory, service_config,
                                                                              token):
    docs = started(container_factory, service_config, token)
    order_id = docs.order()
    data = samples.pdf(text="first run")
    # The id an upload with this Idempotency-Key gets; a crash after its object was written left it so.
    crashed = "d_" + hashlib.sha256(f"agency:{AG}:retry-1".encode()).hexdigest()[:24]
    docs.s3().put_object(Bucket=docs.config["S3_BUCKET"], Key=crashed, Body=data,
                         ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode())
    other = docs.upload(order_id, samples.image("PNG"), headers={"Idempotency-Key": "retry-1"})
    assert other.status_code == 422 and other.json()["rule"] == "idempotency_key_reused"
    stored = docs.s3().get_object(Bucket=docs.config["S3_BUCKET"], Key=crashed)["Body"].read()
    assert stored == data                     # not overwritten
    retried = docs.upload(order_id, data, headers={"Idempotency-Key": "retry-1"})
    assert retried.status_code == 201 and retried.json()["document_id"] == crashed
    assert docs("GET", f"/api/v1/documents/{crashed}/content", "agency", AG).content == data
    assert bucket_keys(docs) == [crashed]


def metric(docs, name, **labels):
    """The value of one sample on the service's /metrics (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    text = requests.get(docs.base + "/metrics", timeout=5).text
    found = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_store_that_fails_is_a_503_counted_and_not_ready_and_stored_bytes_are_reported(container_factory,
                                                                                      service_config, token):
    docs = started(container_factory, service_config, token)
    order_id = docs.order()
    data = samples.image("PNG")
    stored_before = metric(docs, "ipv_document_uploads_total", outcome="stored")
    assert docs.upload(order_id, data).status_code == 201
    assert metric(docs, "ipv_document_uploads_total", outcome="stored") == stored_before + 1
    with entrypoint_hook(docs.container, "refresh_metrics") as hook:
        hook()
    assert metric(docs, "ipv_documents_bytes_stored") == len(data)

    # The bucket disappears under the running service (deleted by mistake, a broken store):
    remove_bucket(docs.config, docs.config["S3_BUCKET"])
    errors_before = metric(docs, "ipv_document_storage_errors_total", operation="put")
    failed = docs.upload(order_id, data)
    assert failed.status_code == 503 and failed.json()["error"] == "unavailable", failed.text
    assert failed.json()["message_zh"]
    assert metric(docs, "ipv_document_storage_errors_total", operation="put") == errors_before + 1
    assert metric(docs, "ipv_document_uploads_total", outcome="storage_error") >= 1
    ready = requests.get(docs.base + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["checks"]["object_storage"] is False
    assert docs("GET", f"/api/v1/documents?order_id={order_id}", "agency", AG).json()["items"][0]["size_bytes"] == len(data)
