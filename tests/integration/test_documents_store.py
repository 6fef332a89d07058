"""The object store's side of the documents service, on the real S3 gateway: an object a crash left
without metadata is never referenced and is swept once it is old enough; an object is never
overwritten; a retry after such a crash finishes the first run's upload instead of storing twice."""
import base64
import hashlib
import time

import pytest
from nameko.testing.services import entrypoint_hook

from services.documents.service import DocumentsService
from tests import document_samples as samples
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
    docs = started(container_factory, service_config, token, DOCUMENT_ORPHAN_AGE_S=1)
    order_id = docs.order()
    kept = docs.upload(order_id, samples.pdf()).json()["document_id"]
    orphan = "d_" + "0" * 24  # what a crash between the object write and the metadata write leaves
    docs.s3().put_object(Bucket=docs.config["S3_BUCKET"], Key=orphan, Body=samples.pdf())
    assert docs("GET", f"/api/v1/documents/{orphan}", "auditor", "a1").status_code == 404
    assert [d["document_id"] for d in docs("GET", f"/api/v1/documents?order_id={order_id}").json()["items"]] == [kept]
    assert sweep(docs) == 0                   # younger than DOCUMENT_ORPHAN_AGE_S: could be an upload in flight
    time.sleep(2.1)
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
