"""Server time per portal page with 10,000 vouchers loaded (issue 15: p95 ≤ 200 ms).

    make run            # the stack, the portal and the demo data
    source var/env && .venv/bin/python -m bench.portal [--vouchers 10000] [--requests 40]

Loads a bench programme with N vouchers (once; found again on a later run) straight into the vouchers
service's database, as issuance would have left them (the programme's issued and remaining match the
vouchers, so every balance conserves): issuing 10,000 through the API takes FerretDB most of an hour, and
what is measured here is reading. 50 of them belong to the demo enterprise. Then signs in each demo
person through the portal and Keycloak as a browser does (requests, the login form, TOTP for staff) and
asks each page `--requests` times in turn, one at a time. Server time = gunicorn's own per-request time
(`%(M)s` in var/run/portal.log, the portal's work including its API calls); the client time beside it.
Percentiles by nearest rank."""
import argparse
import copy
import html
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urljoin

import requests
from pymongo import MongoClient

from scripts.keycloak import demo_users, totp

ROOT = Path(__file__).resolve().parents[1]
BENCH_PROGRAMME = "p_bench_portal"
DEMO_ENTERPRISE = "91350100M000100Y43"


def load_vouchers(mongo_uri, count):
    db = MongoClient(mongo_uri, tz_aware=True)["ipv_vouchers"]
    if db.programmes.find_one({"_id": BENCH_PROGRAMME}):
        return db.vouchers.count_documents({"programme_id": BENCH_PROGRAMME})
    template_programme = db.programmes.find_one({"status": "open"})
    template_voucher = db.vouchers.find_one({"programme_id": template_programme["_id"]})
    if template_voucher is None:
        raise SystemExit("run `make run` first: the bench copies the demo voucher's shape")
    face = 1_000_000
    programme = copy.deepcopy(template_programme)
    programme.update(_id=BENCH_PROGRAMME, name="性能测试服务券（10,000 张）", fund_source="性能测试资金",
                     budget_fen=face * count * 2, issued_fen=face * count, remaining_fen=face * count,
                     issue_no=count, outbox=[], pending={}, seq=2, status="open")
    db.programmes.insert_one(programme)
    docs = []
    for n in range(1, count + 1):
        voucher = copy.deepcopy(template_voucher)
        owner = DEMO_ENTERPRISE if n % (count // 50) == 0 else f"bench-enterprise-{n % 400:03d}"
        voucher.update(_id=f"v_bench_{n:06d}", programme_id=BENCH_PROGRAMME, enterprise_id=owner,
                       face_value_fen=face, free_fen=face, held_fen=0, paid_fen=0, returned_fen=0, status="live",
                       issue_no=n, orders={}, agencies=[], claims_submitted=0, claims_approved=0, claims_total=0,
                       seq=1, outbox=[])
        voucher.pop("relay_until", None)
        docs.append(voucher)
        if len(docs) == 1000:
            db.vouchers.insert_many(docs)
            docs = []
    if docs:
        db.vouchers.insert_many(docs)
    return count


def sign_in(base, username, password, otp_secret):
    """The browser's way in: the portal sends us to Keycloak, we post its login form (and the TOTP form),
    Keycloak sends us back with a code, the portal keeps the tokens and gives us its session cookie."""
    http = requests.Session()
    answer = http.get(f"{base}/sign-in", params={"go": "1"})
    for cookie in http.cookies:  # Keycloak marks them Secure; browsers send those to 127.0.0.1 over http
        cookie.secure = False
    form = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', answer.text)
    answer = http.post(html.unescape(form.group(1)), data={"username": username, "password": password})
    if otp_secret:
        form = re.search(r'<form[^>]*id="kc-otp-login-form"[^>]*action="([^"]+)"', answer.text)
        answer = http.post(html.unescape(form.group(1)), data={"otp": totp(otp_secret).now()})
    if not answer.url.startswith(base):
        raise SystemExit(f"sign-in of {username} did not come back to the portal ({answer.status_code} {answer.url})")
    return http


def server_times(log, since):
    """Each request's time as gunicorn measured it, by path, from the access log lines after `since`."""
    times = {}
    with open(log, "rb") as handle:
        handle.seek(since)
        for line in handle:
            if not line.startswith(b'{"remote"'):
                continue
            entry = json.loads(line)
            path = entry["request"].split(" ")[1]
            times.setdefault(path, []).append(entry["ms"])
    return times


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vouchers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--only", help="only the pages whose path contains this text")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
    print(f"vouchers in the bench programme: {load_vouchers(os.environ['MONGO_URI'], args.vouchers)}")
    users = {role: (name, password, otp) for name, role, _, password, otp in demo_users()}
    pages = {
        None: ["/", "/agencies", f"/programmes/{BENCH_PROGRAMME}", "/publicity"],
        "enterprise": ["/enterprise", "/enterprise/apply"],
        "agency": ["/agency", "/agency/rating"],
        "officer": ["/officer", "/officer/claims", f"/officer/programmes/{BENCH_PROGRAMME}"],
        "auditor": ["/auditor/fund-use?by=month", "/auditor/anomalies"],
    }
    if args.only:
        pages = {role: [p for p in paths if args.only in p] for role, paths in pages.items()}
        pages = {role: paths for role, paths in pages.items() if paths}
    sessions = {None: requests.Session()}
    for role in pages:
        if role:
            sessions[role] = sign_in(base, *users[role])
    sessions.setdefault(None, requests.Session())
    log = ROOT / "var/run/portal.log"
    print(f"{'page':<46} {'as':<10} {'server p50':>10} {'p95':>6} {'client p95':>11}  (ms, {args.requests} requests)"
          "  not 200", flush=True)
    for role, paths in pages.items():
        for path in paths:
            sessions[role].get(urljoin(base, path))  # warm: caches, connections
            since = log.stat().st_size
            client, failed = [], []
            for _ in range(args.requests):
                start = time.perf_counter()
                answer = sessions[role].get(urljoin(base, path), allow_redirects=False)
                client.append((time.perf_counter() - start) * 1000)
                if answer.status_code != 200:
                    failed.append(answer.status_code)
            time.sleep(0.5)  # gunicorn writes the access log after the answer
            ms = server_times(log, since)[path]
            print(f"{path:<46} {role or 'anyone':<10} {percentile(ms, 50):>10} {percentile(ms, 95):>6} "
                  f"{percentile(client, 95):>11.0f}  {failed or ''}", flush=True)

if __name__ == "__main__":
    main()
