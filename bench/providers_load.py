"""Load numbers for the providers service on the local stack, in a fresh database and the test vhost:
order events consumed per second, recommendation and evaluation latency.

    make bench BENCH=providers_load      # or: source var/env && .venv/bin/python -W ignore -m bench.providers_load
"""
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

import requests  # noqa: E402
from kombu import Connection  # noqa: E402
from nameko.containers import ServiceContainer  # noqa: E402
from nameko.testing.services import entrypoint_hook  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from stdnum.cn import uscc  # noqa: E402

from ipvkit.amqp import events_exchange  # noqa: E402
from ipvkit.events import new_event  # noqa: E402
from services.providers.service import ProvidersService  # noqa: E402
from tests.conftest import dumps, free_port  # noqa: E402
from tests.issuer import LocalIssuer  # noqa: E402

AGENCIES, ORDERS, CALLS = 200, 10_000, 100
ENTERPRISES = [b + uscc.calc_check_digit(b) for b in (f"9135010{i:03d}MA2XY00" for i in range(50))]


def code(i):
    body = f"91350102MA{i:07d}"
    return body + uscc.calc_check_digit(body)


def percentiles(samples):
    ordered = sorted(samples)
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p95 {ordered[int(len(ordered) * 0.95)] * 1000:.1f} ms")


def main():
    issuer = LocalIssuer().start()  # tokens by public key, as from the realm, without Keycloak
    vhost = os.environ.get("IPV_TEST_VHOST", "ipv_test")
    amqp = os.environ["AMQP_URI"].rstrip("/") + "/" + vhost
    config = {"AMQP_URI": amqp, "MONGO_URI": os.environ["MONGO_URI"], "MONGO_DB": f"bench_{uuid.uuid4().hex[:8]}",
              **issuer.config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}", "max_workers": 10}
    container = ServiceContainer(ProvidersService, config)
    container.start()
    base = f"http://{config['WEB_SERVER_ADDRESS']}"
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + issuer.token("officer", "bench", ttl=timedelta(hours=1))
    try:
        for i in range(AGENCIES):
            session.post(f"{base}/api/v1/agencies", json={
                "credit_code": code(i), "name": f"代理机构{i}", "kind": "patent", "licence_no": f"L{i}",
                "region": "350102", "service_codes": ["PAT-01"], "contact": {"person": "x", "phone": "0591-1234567"}})
            session.post(f"{base}/api/v1/agencies/{code(i)}/evaluations", json={
                "period_from": "2025-01-01", "period_to": "2025-12-31",
                "deductions": [{"indicator": "abnormal_filings", "points": i % 20}] if i % 20 else []})

        now = datetime.now(timezone.utc)
        events = [new_event(type="order.placed", producer="vouchers", aggregate_id=f"o-{n}", sequence=1,
                            actor={"role": "system", "id": "bench"}, now=now, data={
                                "programme_id": "p", "voucher_id": f"v-{n}", "enterprise_id": ENTERPRISES[n % 50],
                                "order_id": f"o-{n}", "agency_id": code(n % AGENCIES), "service_code": "PAT-01",
                                "price_fen": 100000, "subsidy_fen": 50000, "copay_fen": 50000,
                                "redemption_model": "agency_redeems", "deliver_by": "2026-06-30"})
                  for n in range(ORDERS)]
        orders = MongoClient(config["MONGO_URI"])[config["MONGO_DB"]].orders
        started = time.perf_counter()
        with Connection(amqp, transport_options={"confirm_publish": True}) as conn:
            producer = conn.Producer()
            for event in events:
                producer.publish(dumps(event), exchange=events_exchange("vouchers"), routing_key=event["type"],
                                 content_type="application/json", content_encoding="utf-8")
        while orders.count_documents({}) < ORDERS:
            eventlet.sleep(2)  # a count scans the collection on FerretDB: poll rarely
        elapsed = time.perf_counter() - started
        print(f"order events: {ORDERS} applied in {elapsed:.1f} s = {ORDERS / elapsed:.0f}/s (one container)", flush=True)

        started = time.perf_counter()
        with entrypoint_hook(container, "refresh_service_records") as refresh:
            refresh()
        print(f"service records of {AGENCIES} agencies from {ORDERS} orders (the 10 s timer): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms", flush=True)

        samples = []
        for _ in range(CALLS):
            t = time.perf_counter()
            assert session.get(f"{base}/api/v1/recommendations?service_code=PAT-01&region=35&limit=10").ok
            samples.append(time.perf_counter() - t)
        print(f"recommendations over {AGENCIES} candidates and {ORDERS} orders: {percentiles(samples)}", flush=True)

        samples = []
        for i in range(50):
            t = time.perf_counter()
            assert session.post(f"{base}/api/v1/agencies/{code(i)}/evaluations", json={
                "period_from": "2026-01-01", "period_to": "2026-01-31"}).ok
            samples.append(time.perf_counter() - t)
        print(f"evaluation with {ORDERS // AGENCIES} open orders named in its event: {percentiles(samples)}", flush=True)
    finally:
        container.stop()
        issuer.stop()
        MongoClient(config["MONGO_URI"]).drop_database(config["MONGO_DB"])


if __name__ == "__main__":
    main()
