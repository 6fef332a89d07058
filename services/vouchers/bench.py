"""Order-path numbers for the vouchers service on the local stack: one `nameko run` pod (its own
process, as deployed) on a fresh database in the test vhost, loaded over HTTP from this process.

    source var/env && IPV_TEST_VHOST=ipv_test_vouchers .venv/bin/python -W ignore -m services.vouchers.bench

Prints single-client order latency and sustained throughput and latency at 20 concurrent clients
(each order on its own voucher in turn, as the issue-7 workload spreads enterprises).
"""
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

import requests  # noqa: E402
from kombu import Connection  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from stdnum.cn import uscc  # noqa: E402

from ipvkit.amqp import events_exchange  # noqa: E402
from tests.conftest import dumps, free_port  # noqa: E402
from tests.issuer import LocalIssuer  # noqa: E402
from tests.integration.test_vouchers_api import PROGRAMME, agency_registered, qualification_granted  # noqa: E402

VOUCHERS, SINGLE, CLIENTS, SECONDS = 200, 50, 20, 20
ENTERPRISES = [b + uscc.calc_check_digit(b) for b in (f"91330100MA3B{i:05d}" for i in range(VOUCHERS))]


def ms(ordered, q):
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def summary(samples):
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {ms(ordered, .95):.0f} ms, p99 {ms(ordered, .99):.0f} ms"


def main():
    issuer = LocalIssuer().start()  # tokens by public key, as from the realm, without Keycloak
    vhost = os.environ.get("IPV_TEST_VHOST", "ipv_test")
    amqp = os.environ["AMQP_URI"].rstrip("/") + "/" + vhost
    db, address = f"bench_{uuid.uuid4().hex[:8]}", f"127.0.0.1:{free_port()}"
    env = dict(os.environ, AMQP_URI=amqp, VOUCHERS_DB=db, VOUCHERS_HTTP=address, **issuer.config,
               LOG_LEVEL="WARNING")
    pod = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "nameko"), "run", "--config",
                            "services/vouchers/config.yaml", "services.vouchers.service:SERVICE"], env=env)
    base, session = f"http://{address}", requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=CLIENTS)
    session.mount("http://", adapter)

    def auth(role, subject):
        return issuer.header(role, subject, ttl=timedelta(hours=1))
    try:
        for _ in range(100):
            try:
                if session.get(f"{base}/health/ready").ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        now = datetime.now(timezone.utc)
        programme = dict(PROGRAMME, budget_fen=VOUCHERS * 2_000_000, opens_on="2020-01-01", closes_on="2099-12-31")
        events = [qualification_granted(e, valid_from="2020-01-01", valid_to="2099-12-31") for e in ENTERPRISES]
        events.append(agency_registered())
        with Connection(amqp) as conn:
            producer = conn.Producer()
            for e in events:
                producer.publish(dumps(e), exchange=events_exchange(e["producer"]), routing_key=e["type"],
                                 content_type="application/json", content_encoding="utf-8")
        pid = session.post(f"{base}/api/v1/programmes", json=programme, headers=auth("officer", "o1")).json()["programme_id"]
        assert session.post(f"{base}/api/v1/programmes/{pid}/open", headers=auth("officer", "o1")).ok
        time.sleep(3)  # the read models take the events

        def apply(enterprise):
            for _ in range(20):
                r = session.post(f"{base}/api/v1/vouchers", json={"programme_id": pid}, headers=auth("enterprise", enterprise))
                if r.status_code == 201:
                    return r.json()["voucher_id"]
                time.sleep(0.5)  # its qualification is not in the read model yet
            raise RuntimeError(r.text)
        vouchers = list(eventlet.GreenPool(10).imap(apply, ENTERPRISES))
        deliver_by = now.date().replace(year=now.year + 1).isoformat()

        def order(i):
            t = time.perf_counter()
            r = session.post(f"{base}/api/v1/orders", headers=auth("enterprise", ENTERPRISES[i % VOUCHERS]), json={
                "voucher_id": vouchers[i % VOUCHERS], "agency_id": "ag-1", "service_code": "PAT-01",
                "price_fen": 2_000, "deliver_by": deliver_by})
            assert r.status_code == 201, r.text
            return time.perf_counter() - t

        print(f"single client, {SINGLE} orders: {summary([order(i) for i in range(SINGLE)])}", flush=True)
        samples, counter, stop = [], iter(range(SINGLE, 10**9)), time.perf_counter() + SECONDS

        def client(_):
            while time.perf_counter() < stop:
                samples.append(order(next(counter)))
        started = time.perf_counter()
        list(eventlet.GreenPool(CLIENTS).imap(client, range(CLIENTS)))
        elapsed = time.perf_counter() - started
        print(f"{CLIENTS} concurrent clients for {elapsed:.0f} s: {len(samples)} orders = "
              f"{len(samples) / elapsed:.0f}/s, {summary(samples)}", flush=True)
    finally:
        pod.terminate()
        pod.wait(30)
        issuer.stop()
        MongoClient(os.environ["MONGO_URI"]).drop_database(db)


if __name__ == "__main__":
    main()
