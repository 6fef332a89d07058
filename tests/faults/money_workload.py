"""Workload driver for the money fault tests: each client takes its own qualified enterprises one
by one and walks each through the whole chain over HTTP (apply, order, deliver, confirm, claim,
approve, pay), each write retried with its Idempotency-Key like a careful client (tests/faults/
workload.py `send`'s rules) until a definite answer or its budget runs out. A step without a 2xx
ends that enterprise's chain. Every outcome is one JSON line in OUT:
`{"op", "enterprise", "on" (the id it acted on), "id" (the id it made or acted on, on a 2xx), "status",
"seen", "issued"}`.

    python -m tests.faults.money_workload PLAN.json OUT --stop-file F [--seconds CAP]
Runs until the stop file exists (the test waits for the chains it needs first) or its enterprises
are done; --seconds is only a safety cap.
PLAN: {"base", "programme_id", "agencies": [...], "enterprises": [[client 0's], [client 1's], ...]}
"""
import argparse
import json
import os
import threading
import time
from datetime import date, timedelta

import requests

from tests.issuer import Signer
from tests.faults.workload import RETRY_BUDGET_S

PRICE_FEN = 1_000_000
EVIDENCE = {"contract_ref": "HT-FAULT", "invoice_no": "INV-FAULT", "payment_proof_ref": "BANK-FAULT",
            "official_no": None, "deliverable_sha256": "cd" * 32}


def send(session, method, url, body, key, token):
    """One write until a definite answer: (status or None, every answer on the way, last JSON body)."""
    seen, deadline, pause = [], time.monotonic() + RETRY_BUDGET_S, 0.2
    headers = {"Authorization": "Bearer " + token, "Idempotency-Key": key}
    while time.monotonic() < deadline:
        try:
            response = session.request(method, url, json=body, timeout=10, headers=headers)
            seen.append(response.status_code)
            in_progress = response.status_code == 409 and "in progress" in response.text
            if response.status_code < 500 and not in_progress:
                return response.status_code, seen, response.json()
        except (requests.RequestException, ValueError) as exc:
            seen.append(type(exc).__name__)  # down or restarting: try again
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    return None, seen, None


def chain(plan, signer, enterprise_id, agency_id):
    """The steps for one enterprise: (op, role, subject, method, path or path(made), body, made from answer)."""
    base, deliver_by = plan["base"], (date.today() + timedelta(days=60)).isoformat()
    officer = signer.token("officer", "faults-officer")
    enterprise, agency = signer.token("enterprise", enterprise_id), signer.token("agency", agency_id)
    return [
        ("apply", enterprise, "POST", lambda _: f"{base}/api/v1/vouchers",
         lambda _: {"programme_id": plan["programme_id"]}, "voucher_id"),
        ("order", enterprise, "POST", lambda _: f"{base}/api/v1/orders",
         lambda v: {"voucher_id": v, "agency_id": agency_id, "service_code": "PAT-01", "price_fen": PRICE_FEN,
                    "deliver_by": deliver_by}, "order_id"),
        ("deliver", agency, "POST", lambda o: f"{base}/api/v1/orders/{o}/deliver", lambda _: EVIDENCE, "order_id"),
        ("confirm", enterprise, "POST", lambda o: f"{base}/api/v1/orders/{o}/confirm", lambda _: None, "order_id"),
        ("claim", agency, "POST", lambda _: f"{base}/api/v1/claims", lambda o: {"order_id": o}, "claim_id"),
        ("approve", officer, "POST", lambda c: f"{base}/api/v1/claims/{c}/approve", lambda _: None, "claim_id"),
        ("pay", officer, "POST", lambda c: f"{base}/api/v1/claims/{c}/pay",
         lambda c: {"payment_ref": f"PAY-{c}"}, "claim_id"),
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=900, help="a safety cap; the test stops it with --stop-file")
    parser.add_argument("--stop-file", help="start no new chain once this file exists")
    args = parser.parse_args()
    plan = json.loads(open(args.plan).read())
    signer, stop_at, lock = Signer.from_env(), time.monotonic() + args.seconds, threading.Lock()

    def stopping():
        return time.monotonic() > stop_at or (args.stop_file and os.path.exists(args.stop_file))

    with open(args.out, "w") as out:
        def client(number, enterprises):
            session = requests.Session()
            for n, enterprise_id in enumerate(enterprises):
                if stopping():
                    return
                agency_id = plan["agencies"][(number + n) % len(plan["agencies"])]
                made = None
                for op, token, method, url, body, answer_key in chain(plan, signer, enterprise_id, agency_id):
                    if op != "apply" and stopping():
                        return   # the chain stops part-way; what was done must still add up
                    issued = time.time()
                    status, seen, answer = send(session, method, url(made), body(made), f"f-{op}-{enterprise_id}",
                                                token)
                    acted_on = made
                    made = answer.get(answer_key) if status in (200, 201) else None
                    with lock:
                        out.write(json.dumps({"op": op, "enterprise": enterprise_id, "on": acted_on,
                                              "id": made, "status": status, "seen": seen, "issued": issued}) + "\n")
                        out.flush()
                    if made is None:
                        break
        threads = [threading.Thread(target=client, args=(i, mine)) for i, mine in enumerate(plan["enterprises"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


if __name__ == "__main__":
    main()
