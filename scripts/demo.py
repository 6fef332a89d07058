"""Loads demo data through the public API (so it is validated and evented like any other) and prints
where to look. Every write carries a fixed Idempotency-Key, so running it again changes nothing.

The story: two qualified enterprises, two agencies (one rated A+ by a bonus, one C, below the line),
an open 玉环-style programme, a voucher, and one order taken all the way to payment, one left open."""
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

from pypdf import PdfWriter
from urllib3 import encode_multipart_formdata

from scripts.keycloak import Keycloak, Tokens, print_users

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
GOOD_AGENCY, WEAK_AGENCY = "91331021MA2H1PT0XL", "91110108MA01K9QW3F"
AGENCIES = [
    {"credit_code": GOOD_AGENCY, "name": "玉环明诚专利代理事务所", "kind": "patent", "licence_no": "33215",
     "region": "331021", "service_codes": ["PAT-01", "PAT-02"],
     "contact": {"person": "陈律", "phone": "0576-87221234", "email": "ip@mingcheng.example"}},
    {"credit_code": WEAK_AGENCY, "name": "北京速达知识产权代理有限公司", "kind": "both", "licence_no": "11877",
     "region": "110108", "service_codes": ["PAT-01", "TM-01"],
     "contact": {"person": "王经理", "phone": "010-62551234"}},
]
EVALUATIONS = {
    GOOD_AGENCY: {"period_from": "2025-01-01", "period_to": "2025-12-31", "bonuses": [{"indicator": "honour"}]},
    WEAK_AGENCY: {"period_from": "2025-01-01", "period_to": "2025-12-31",
                  "deductions": [{"indicator": "abnormal_filings", "points": 25},
                                 {"indicator": "administrative_penalty", "count": 1}]},
}
PROGRAMME = {
    "name": "玉环市知识产权服务券（2026 演示）", "region": "331021", "fund_source": "中小企业发展专项资金",
    "budget_fen": 50_000_000, "opens_on": "2026-01-01", "closes_on": "2026-12-31", "validity_days": 180,
    "redemption_model": "agency_redeems",
    "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000},
              {"tier": "innovative_sme", "face_value_fen": 1_000_000, "annual_cap_fen": 3_000_000}],
    "catalogue": [
        {"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000, "item_cap_fen": 1_000_000,
         "agency_kinds": ["patent"]},
        {"service_code": "PAT-02", "name": "专利申请代理", "subsidy_ratio_bp": 5000, "item_cap_fen": 500_000,
         "agency_kinds": ["patent"], "barred_reason": "国知局2021年通知：专利申请代理服务费不得资助"},
        {"service_code": "TM-01", "name": "商标注册代理", "subsidy_ratio_bp": 10000, "item_cap_fen": 200_000,
         "agency_kinds": ["trademark"]},
    ]}
EVIDENCE = {"contract_ref": "HT-2026-DEMO-1", "invoice_no": "33000261-0001", "payment_proof_ref": "BANK-DEMO-1",
            "official_no": None, "deliverable_sha256": "5" * 64}


PORT_BASE = int(os.environ.get("IPV_SERVICE_PORT_BASE") or 8100)   # as scripts/services.sh


# The delivery's documents: a contract (PDF) and the 数电票 XML of the agency's invoice.
INVOICE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<EInvoice><Header><EIid>26332000000000000001</EIid><Version>0.1</Version></Header>
<EInvoiceData><SellerInformation><SellerIdNum>91331021MA2H1PT0XL</SellerIdNum><SellerName>玉环明诚专利代理事务所</SellerName></SellerInformation>
<BuyerInformation><BuyerIdNum>91350100M000100Y43</BuyerIdNum><BuyerName>福州闽光精密制造有限公司</BuyerName></BuyerInformation>
<BasicInformation><TotalTax-includedAmount>12000.00</TotalTax-includedAmount></BasicInformation></EInvoiceData>
<TaxSupervisionInfo><InvoiceNumber>26332000000000000001</InvoiceNumber><IssueTime>2026-06-01</IssueTime></TaxSupervisionInfo>
</EInvoice>""".encode()


def contract_pdf():
    writer, out = PdfWriter(), io.BytesIO()
    writer.add_blank_page(width=595, height=842)
    writer.add_metadata({"/Title": "HT-2026-DEMO-1 专利导航分析服务合同"})
    writer.write(out)
    return out.getvalue()


class Api:
    def __init__(self, base):
        # Each call signed in as the demo user of its role, through the realm (tokens kept in var/keycloak).
        keycloak = Keycloak()
        self.base, self.tokens = base, Tokens(keycloak, cache_file=keycloak.dir / "tokens.json")

    def __call__(self, role, subject, method, path, body=None, key=None, ok=(200, 201), retry_rules=()):
        """One call; `key` makes it idempotent. A 422 whose rule is in `retry_rules` is retried for a while:
        the service has not yet read the event that would allow it (read models are fed asynchronously)."""
        headers = {"Authorization": f"Bearer {self.tokens(role, subject)}",
                   "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = f"demo-{key}"
        deadline = time.monotonic() + 20
        while True:
            status, answer = self._send(method, path, body, headers)
            if status == 422 and answer.get("rule") in retry_rules and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if status not in ok:
                sys.exit(f"demo data: {method} {path} answered {status} {answer}")
            return answer

    def upload(self, role, subject, order_id, kind, filename, data, key):
        """A file for an order, as the portal sends it (multipart); retried while the documents service
        has not yet heard of the order (it learns orders from their events)."""
        body, content_type = encode_multipart_formdata(
            {"kind": kind, "order_id": order_id, "file": (filename, data, "application/octet-stream")})
        headers = {"Authorization": f"Bearer {self.tokens(role, subject)}", "Content-Type": content_type,
                   "Idempotency-Key": f"demo-{key}"}
        deadline = time.monotonic() + 20
        while True:
            status, answer = self._send("POST", "/api/v1/documents", body, headers, raw=True)
            if status == 404 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if status != 201:
                sys.exit(f"demo data: uploading {filename} answered {status} {answer}")
            return answer

    def _send(self, method, path, body, headers, raw=False):
        data = body if raw else json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def wait_until_audited(api, claim_id):
    """The 公示 (public notice) shows a payment once the audit ledger holds it, and the ledger is fed by
    events: wait for it, so the pages printed below show the demo payment at once."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = -1
        while after is not None:
            page = api("auditor", "demo-auditor", "GET", f"/api/v1/audit/entries?type=claim.paid&limit=500&after={after}")
            if any(e["event"]["data"].get("claim_id") == claim_id for e in page["items"]):
                return
            after = page["next_cursor"]
        time.sleep(0.5)
    sys.exit("demo data: the audit ledger did not record the demo payment in 60 s (see var/run/audit.log)")


def main(base):
    api = Api(base)
    for enterprise in ENTERPRISES:
        code = enterprise["credit_code"]
        api("officer", "demo-officer", "POST", "/api/v1/enterprises", enterprise, key=f"ent-{code}", ok=(201, 409))
        api("officer", "demo-officer", "POST", f"/api/v1/enterprises/{code}/qualifications", QUALIFICATIONS[code],
            key=f"qual-{code}", ok=(201, 409))
    for agency in AGENCIES:
        code = agency["credit_code"]
        api("officer", "demo-officer", "POST", "/api/v1/agencies", agency, key=f"agency-{code}", ok=(201, 409))
        api("officer", "demo-officer", "POST", f"/api/v1/agencies/{code}/evaluations", EVALUATIONS[code],
            key=f"eval-{code}")
    programme = api("officer", "demo-officer", "POST", "/api/v1/programmes", PROGRAMME, key="programme")
    pid = programme["programme_id"]
    api("officer", "demo-officer", "POST", f"/api/v1/programmes/{pid}/open", key="programme-open", ok=(200, 409))

    enterprise = ENTERPRISES[0]["credit_code"]
    voucher = api("enterprise", enterprise, "POST", "/api/v1/vouchers", {"programme_id": pid}, key="voucher",
                  retry_rules=("tier_not_held",))
    vid = voucher["voucher_id"]
    order = {"voucher_id": vid, "agency_id": GOOD_AGENCY, "service_code": "PAT-01", "price_fen": 1_200_000,
             "deliver_by": "2026-12-31"}
    paid = api("enterprise", enterprise, "POST", "/api/v1/orders", order, key="order-paid",
               retry_rules=("agency_unknown", "agency_below_rating_line"))
    oid = paid["order_id"]
    documents = {kind: api.upload("agency", GOOD_AGENCY, oid, kind, name, data, key=f"doc-{kind}")["document_id"]
                 for kind, name, data in (("contract", "服务合同.pdf", contract_pdf()),
                                          ("invoice", "数电票.xml", INVOICE_XML))}
    api("agency", GOOD_AGENCY, "POST", f"/api/v1/orders/{oid}/deliver", dict(EVIDENCE, documents=documents),
        key="deliver", retry_rules=("delivery_documents",))
    api("enterprise", enterprise, "POST", f"/api/v1/orders/{oid}/confirm", key="confirm")
    claim = api("agency", GOOD_AGENCY, "POST", "/api/v1/claims", {"order_id": oid}, key="claim")
    api("officer", "demo-officer", "POST", f"/api/v1/claims/{claim['claim_id']}/approve", key="approve")
    api("officer", "demo-officer", "POST", f"/api/v1/claims/{claim['claim_id']}/pay",
        {"payment_ref": "GK-2026-DEMO-0001"}, key="pay")
    open_order = api("enterprise", enterprise, "POST", "/api/v1/orders", dict(order, price_fen=600_000),
                     key="order-open")
    wait_until_audited(api, claim["claim_id"])
    print(f"""
IP-service vouchers is running, with demo data: programme {pid}, voucher {vid} of {enterprise},
order {oid} paid to agency {GOOD_AGENCY}, order {open_order['order_id']} open.

  Portal:     {base}/   (open it in a browser; sign in as a demo user)
  API base:   {base}/api/v1   (OpenAPI per service: {base}/api/v1/openapi/<enterprises|providers|vouchers|audit|documents>.json)
  Metrics:    http://127.0.0.1:{PORT_BASE + 1}/metrics .. :{PORT_BASE + 5}/metrics   (enterprises, providers, vouchers, audit, documents)
  Logs:       var/run/*.log

Try (make token signs in to Keycloak as a user of that role, with the TOTP code for staff):
  T=$(make -s token ROLE=officer SUBJECT=o1)
  curl -H "Authorization: Bearer $T" {base}/api/v1/programmes/{pid}/balances
  curl -H "Authorization: Bearer $T" "{base}/api/v1/recommendations?service_code=PAT-01&region=331021"
  curl -H "Authorization: Bearer $(make -s token ROLE=auditor SUBJECT=a1)" {base}/api/v1/audit/verify
  curl -H "Authorization: Bearer $T" {base}/api/v1/documents/{documents['contract']}/verify
Stop everything with: make stop
""")
    print_users()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
