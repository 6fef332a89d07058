"""Workload driver for the fault tests: several clients register enterprises until told to stop, each
request retried with its Idempotency-Key like a careful client would (connection errors, 5xx,
"still in progress") until it gets a definite answer or its retry budget runs out. Every outcome
is one JSON line in OUT, so the test can check that every acknowledged write survived.

    python -m tests.faults.workload register http://127.0.0.1:PORT OUT --stop-file F [--clients 4] [--seconds CAP]
"""
import argparse
import json
import os
import threading
import time

import requests
from stdnum.cn import uscc

from tests.issuer import Signer

RETRY_BUDGET_S = 12


def credit_code(client, n):
    body = f"91350100{os.getpid() % 1000:03d}{client:02d}{n:04d}"
    return body + uscc.calc_check_digit(body)


def register(base, client, n):
    code = credit_code(client, n)
    return code, "POST", f"{base}/api/v1/enterprises", {
        "credit_code": code, "name": f"故障测试企业{client}-{n}", "region": "350102", "industry": "C34",
        "size": "small"}


OPERATIONS = {"register": register}


def send(session, method, url, body, key, headers):
    """One write until a definite answer. Returns (status or None, every answer on the way)."""
    seen, deadline, pause = [], time.monotonic() + RETRY_BUDGET_S, 0.2
    while time.monotonic() < deadline:
        try:
            response = session.request(method, url, json=body, timeout=10,
                                       headers=dict(headers, **{"Idempotency-Key": key}))
            seen.append(response.status_code)
            in_progress = response.status_code == 409 and "in progress" in response.text
            if response.status_code < 500 and not in_progress:
                return response.status_code, seen
        except requests.RequestException as exc:
            seen.append(type(exc).__name__)  # down or restarting: try again
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    return None, seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(OPERATIONS))
    parser.add_argument("base")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=900, help="a safety cap; the test stops it with --stop-file")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--stop-file", help="stop issuing new writes once this file exists")
    args = parser.parse_args()
    headers = {"Authorization": "Bearer " + Signer.from_env().token("officer", "faults")}
    stop_at = time.monotonic() + args.seconds
    lock = threading.Lock()

    with open(args.out, "w") as out:
        def client(number):
            session = requests.Session()
            n = 0
            while time.monotonic() < stop_at and not (args.stop_file and os.path.exists(args.stop_file)):
                n += 1
                record_id, method, url, body = OPERATIONS[args.kind](args.base, number, n)
                issued = time.time()
                status, seen = send(session, method, url, body, f"faults-{record_id}", headers)
                with lock:
                    out.write(json.dumps({"id": record_id, "status": status, "seen": seen,
                                          "issued": issued}) + "\n")
                    out.flush()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


if __name__ == "__main__":
    main()
