"""kill -9 of the documents service in the middle of an upload: nothing half-stored is referenced
anywhere (no metadata, no event, nothing listed for the order, no object), and after a restart the
same upload goes through. The service runs as `nameko run` runs it, on the test stack's broker,
database and object store (only its own process is killed); the window between the object write and
the metadata write is covered by the orphan sweep test in tests/integration/test_documents_store.py."""
import os
import signal
import socket
import subprocess
import uuid
from datetime import datetime, timezone

import pytest
import requests
from pymongo import MongoClient

from ipvkit.amqp import events_exchange
from ipvkit.events import new_event
from tests import document_samples as samples
from tests.conftest import dumps, free_port, publish_raw, s3_client
from tests.faults.harness import ROOT, wait_until

pytestmark = pytest.mark.integration

ENT, AG = "91350100M000100Y43", "ag-1"


class DocumentsProcess:
    def __init__(self, amqp_uri, mongo_uri, bucket, db, trusted_issuer):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, AMQP_URI=amqp_uri, MONGO_URI=mongo_uri, **trusted_issuer, S3_BUCKET=bucket,
                        DOCUMENTS_DB=db, DOCUMENTS_HTTP=f"127.0.0.1:{self.port}", PYTHONWARNINGS="ignore")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/nameko"), "run", "--config", "services/documents/config.yaml",
             "services.documents.service:SERVICE"], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until("documents ready", lambda: requests.get(self.base + "/readyz", timeout=2).status_code == 200, 30)
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def documents(amqp_uri, mongo_uri, service_config, issuer):
    service = DocumentsProcess(amqp_uri, mongo_uri, service_config["S3_BUCKET"], service_config["MONGO_DB"],
                               issuer.config)
    yield service
    service.stop()


def test_kill_9_in_the_middle_of_an_upload_leaves_nothing_half_stored(documents, amqp_uri, mongo_uri, service_config,
                                                                      event_tap, token):
    def auth():
        return token("agency", AG)

    tap = event_tap("documents", "document.uploaded")
    documents.start()
    order_id = f"o_{uuid.uuid4().hex[:20]}_{uuid.uuid4().hex[:8]}"
    publish_raw(amqp_uri, events_exchange("vouchers"), "order.placed", dumps(new_event(
        type="order.placed", producer="vouchers", aggregate_id=order_id, sequence=1,
        actor={"role": "enterprise", "id": ENT}, now=datetime.now(timezone.utc), data={
            "programme_id": "p_1", "voucher_id": "v_1", "enterprise_id": ENT, "order_id": order_id, "agency_id": AG,
            "service_code": "PAT-01", "price_fen": 1_000_000, "subsidy_fen": 500_000, "copay_fen": 500_000,
            "redemption_model": "agency_redeems", "deliver_by": "2026-09-30"})))
    listing = f"{documents.base}/api/v1/documents?order_id={order_id}"
    # A bound, not a speed demand. Ready now means its consumer is subscribed: before 4 December /readyz
    # could answer while the queues were still being declared, and an event published then went unrouted
    # (this waited 60 s in vain once, as the suite's first test on a new broker).
    wait_until("the order is known", lambda: requests.get(listing, headers=auth(), timeout=5).status_code == 200, 60)

    data = samples.pdf(padding=10 << 20)
    head = (b"--b0undary\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\ndeliverable\r\n"
            b"--b0undary\r\nContent-Disposition: form-data; name=\"order_id\"\r\n\r\n" + order_id.encode() +
            b"\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report.pdf\"\r\n\r\n")
    body = head + data + b"\r\n--b0undary--\r\n"
    with socket.create_connection(("127.0.0.1", documents.port), timeout=30) as sock:
        sock.sendall(f"POST /api/v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                     f"{auth()['Authorization']}\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(body[: len(body) // 2])      # half the file is in; the service is hashing and spooling it
        documents.kill9()

    documents.start()                             # the same database and bucket
    assert requests.get(listing, headers=auth(), timeout=5).json()["items"] == []
    assert MongoClient(mongo_uri)[service_config["MONGO_DB"]]["documents"].count_documents({}) == 0
    assert s3_client(service_config).list_objects_v2(Bucket=service_config["S3_BUCKET"]).get("KeyCount", 0) == 0
    assert tap.drain(1.0) == []

    # Served again: the whole upload now goes through, once, with its event.
    done = requests.post(f"{documents.base}/api/v1/documents", headers=auth(), timeout=60,
                         files={"file": ("report.pdf", data, "application/pdf")},
                         data={"kind": "deliverable", "order_id": order_id})
    assert done.status_code == 201, done.text
    assert [d["document_id"] for d in requests.get(listing, headers=auth(), timeout=5).json()["items"]] == [
        done.json()["document_id"]]
    assert tap.next()["aggregate_id"] == done.json()["document_id"]
