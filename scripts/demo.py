"""Loads demo data through the public API (so it is validated and evented like any other) and
prints where to look. Safe to run again: what exists already is left as it is."""
import json
import os
import sys
import urllib.error
import urllib.request

from ipvkit.auth import issue_token

ENTERPRISES = [
    {"credit_code": "91350100M000100Y43", "name": "福州闽光精密制造有限公司", "region": "350102", "industry": "C34", "size": "small"},
    {"credit_code": "91310115MA1K3YJ15R", "name": "上海浦江知识产权科技有限公司", "region": "310115", "industry": "I65", "size": "micro"},
]
QUALIFICATIONS = {
    "91350100M000100Y43": {"tier": "srdi_sme", "level": "provincial", "certificate_no": "闽专精特新〔2025〕0117",
                           "issuing_authority": "福建省工业和信息化厅", "valid_from": "2025-01-01", "valid_to": "2027-12-31"},
    "91310115MA1K3YJ15R": {"tier": "innovative_sme", "level": "provincial", "certificate_no": "沪创新〔2024〕2231",
                           "issuing_authority": "上海市经济和信息化委员会", "valid_from": "2024-06-01", "valid_to": "2027-05-31"},
}


def call(base, token, method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def main(base):
    officer = issue_token(os.environ["AUTH_SECRET"], "officer", "demo-officer")
    for enterprise in ENTERPRISES:
        status, body = call(base, officer, "POST", "/api/v1/enterprises", enterprise)
        if status not in (201, 409):
            sys.exit(f"demo data: registering {enterprise['credit_code']} answered {status} {body}")
        status, body = call(base, officer, "POST", f"/api/v1/enterprises/{enterprise['credit_code']}/qualifications",
                            QUALIFICATIONS[enterprise["credit_code"]])
        if status not in (201, 409):
            sys.exit(f"demo data: qualifying {enterprise['credit_code']} answered {status} {body}")
    print(f"""
IP-service vouchers is running.
  API base:   {base}/api/v1
  OpenAPI:    {base}/api/v1/openapi/enterprises.json
  Metrics:    http://127.0.0.1:8101/metrics   (enterprises service)
  Logs:       var/run/*.log

Try:
  curl -H "Authorization: Bearer $(make -s token ROLE=officer SUBJECT=o1)" {base}/api/v1/enterprises
Stop everything with: make stop
""")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
