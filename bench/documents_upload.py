"""Upload throughput of the documents service for a 10 MB file, with the ceilings it sits under,
all measured in one run on one machine:

    make bench BENCH=documents_upload BENCH_ARGS="--rounds 10 --clients 4"

1. the service as deployed: one `nameko run` process on a fresh database and bucket (test vhost), the
   10 MB PDF uploaded over HTTP (multipart, keep-alive), sequentially and then from `--clients` threads;
2. the object store alone: the same bytes `put_object` straight to the S3 gateway with the same
   checksum header (the service's storage step, without HTTP in front or checks);
3. the service's CPU work alone, in this process: SHA-256 of the file and judging it (`domain.detect`).

MB/s = 10 MB × successful uploads / wall time; the ratio of (1) to (2) is what the service costs.
"""
import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import ssl  # noqa: E402
import urllib3.util.ssl_  # noqa: E402

urllib3.util.ssl_.SSLContext = ssl.SSLContext  # as tests/conftest.py: urllib3 may predate the patch

import requests  # noqa: E402
from kombu import Connection  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from ipvkit.amqp import events_exchange  # noqa: E402
from ipvkit.events import new_event  # noqa: E402
from services.documents import domain  # noqa: E402
from tests.conftest import dumps, free_port, remove_bucket, s3_client  # noqa: E402
from tests.document_samples import pdf  # noqa: E402
from tests.issuer import LocalIssuer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1024 * 1024


def ten_mb_pdf():
    return pdf(padding=10 * MB - len(pdf(padding=1)))


def rate(count, size, seconds):
    return count * size / MB / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    vhost = os.environ.get("IPV_TEST_VHOST", "ipv_test")
    amqp = os.environ.get("TEST_AMQP_URI") or os.environ["AMQP_URI"].rstrip("/") + "/" + vhost
    s3 = {k: os.environ[k] for k in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY")}
    run = uuid.uuid4().hex[:8]
    db, bucket, port = f"bench_documents_{run}", f"bench-{run}", free_port()
    issuer = LocalIssuer().start()  # tokens by public key, as from the realm, without Keycloak
    data = ten_mb_pdf()
    size = len(data)
    log = open(os.path.join(ROOT, "var", f"bench-documents-{run}.log"), "wb")
    proc = subprocess.Popen(
        [os.path.join(ROOT, ".venv/bin/nameko"), "run", "--config", "services/documents/config.yaml",
         "services.documents.service:SERVICE"], cwd=ROOT, stdout=log, stderr=log,
        env=dict(os.environ, AMQP_URI=amqp, DOCUMENTS_DB=db, S3_BUCKET=bucket, **issuer.config,
                 DOCUMENTS_HTTP=f"127.0.0.1:{port}", PYTHONWARNINGS="ignore", **s3))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"the documents service did not start; see {log.name}")
            time.sleep(0.3)
        order_id = f"o_{uuid.uuid4().hex[:20]}_{run}"
        with Connection(amqp, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(dumps(new_event(
                type="order.placed", producer="vouchers", aggregate_id=order_id, sequence=1,
                actor={"role": "enterprise", "id": "91350100M000100Y43"}, now=datetime.now(timezone.utc), data={
                    "programme_id": "p_1", "voucher_id": "v_1", "enterprise_id": "91350100M000100Y43",
                    "order_id": order_id, "agency_id": "ag-1", "service_code": "PAT-01", "price_fen": 1_000_000,
                    "subsidy_fen": 500_000, "copay_fen": 500_000, "redemption_model": "agency_redeems",
                    "deliver_by": "2026-09-30"})), exchange=events_exchange("vouchers"), routing_key="order.placed",
                content_type="application/json", declare=[events_exchange("vouchers")])
        headers = issuer.header("agency", "ag-1")
        listing = f"{base}/api/v1/documents?order_id={order_id}"
        while requests.get(listing, headers=headers, timeout=5).status_code != 200:
            time.sleep(0.1)

        def upload(session):
            answer = session.post(base + "/api/v1/documents", headers=headers, timeout=120,
                                  files={"file": ("report.pdf", data, "application/pdf")},
                                  data={"kind": "deliverable", "order_id": order_id})
            assert answer.status_code == 201, answer.text
            return answer

        session = requests.Session()
        upload(session)  # warm-up: connections, the bucket, imports
        times = []
        started = time.perf_counter()
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            upload(session)
            times.append(time.perf_counter() - t0)
        sequential = rate(args.rounds, size, time.perf_counter() - started)

        pool = eventlet.GreenPool(args.clients)
        sessions = [requests.Session() for _ in range(args.clients)]
        started = time.perf_counter()
        list(pool.imap(lambda i: upload(sessions[i % args.clients]), range(args.rounds * 2)))
        concurrent = rate(args.rounds * 2, size, time.perf_counter() - started)

        client = s3_client(s3)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        started = time.perf_counter()
        for n in range(args.rounds):
            client.put_object(Bucket=bucket, Key=f"direct-{n}", Body=data, ChecksumSHA256=checksum,
                              ContentType="application/pdf")
        direct = rate(args.rounds, size, time.perf_counter() - started)

        started = time.perf_counter()
        for _ in range(args.rounds):
            hashlib.sha256(data).digest()
            domain.detect(io.BytesIO(data), size, max_zip_bytes=size)
        cpu = rate(args.rounds, size, time.perf_counter() - started)

        print(f"documents upload bench: a {size / MB:.1f} MB PDF, {args.rounds} rounds, on this machine")
        print(f"  service, 1 client:         {sequential:7.1f} MB/s  (p50 {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times) * 1000:.0f} ms per upload)")
        print(f"  service, {args.clients} clients:         {concurrent:7.1f} MB/s  ({args.rounds * 2} uploads)")
        print(f"  S3 gateway put_object:     {direct:7.1f} MB/s  (the store alone, same checksum header)")
        print(f"  hash + judge, in-process:  {cpu:7.1f} MB/s  (SHA-256 and domain.detect, no I/O)")
        print(f"  service / store ratio:     {sequential / direct:7.2f}")
    finally:
        proc.terminate()
        proc.wait(20)
        MongoClient(os.environ["MONGO_URI"]).drop_database(db)
        remove_bucket(s3, bucket)
        issuer.stop()


if __name__ == "__main__":
    main()
