"""An order on a voucher this pod has seen is one guarded write, without reading the voucher first:
its fixed facts (programme, enterprise, catalogue revision) are known, and the write's guard holds
every condition the read path checks. Whatever the guard refuses, the answer is the read path's."""
from ipvkit import metrics
from tests.integration.test_vouchers_api import ENT, ENT2, agency_registered, vapi  # noqa: F401


def voucher_commands():
    """{(kind, access): count} of the vouchers collection so far, from the service's own counter."""
    found = {}
    for family in metrics.DB_COMMANDS.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["service"] == "vouchers" and labels["collection"] == "vouchers":
                found[(labels["kind"], labels["access"])] = sample.value
    return found


def moved(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_an_order_on_a_voucher_this_pod_issued_reads_nothing_of_it(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    before = voucher_commands()
    placed = vapi.order(vid, price=1_000_000)
    assert placed.status_code == 201, placed.text
    # The guarded write (which also takes the relay lease) and the relay's outbox clear; no read.
    assert moved(before, voucher_commands()) == {("write", "by_id"): 2}
    assert placed.json()["subsidy_fen"] == 500_000


def test_what_the_guard_refuses_gets_the_read_paths_answer(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]                   # 2,000,000 fen, valid to 2026-11-27
    assert vapi.order(vid, enterprise=ENT2).status_code == 403        # someone else's, known without a read
    first = vapi.order(vid, price=3_000_000, headers={"Idempotency-Key": "order-unread-1"})
    assert first.status_code == 201 and first.json()["subsidy_fen"] == 1_000_000   # the item cap
    again = vapi.order(vid, price=3_000_000, headers={"Idempotency-Key": "order-unread-1"})
    assert again.status_code == 201 and again.json()["order_id"] == first.json()["order_id"]

    # 1,000,000 fen left: a full subsidy of 1,000,000 still fits, then only what is left.
    assert vapi.order(vid, price=1_600_000).json()["subsidy_fen"] == 800_000
    rest = vapi.order(vid, price=1_600_000)
    assert rest.status_code == 201 and rest.json()["subsidy_fen"] == 200_000
    empty = vapi.order(vid, price=1_600_000)
    assert empty.status_code == 409 and empty.json()["free_fen"] == 0

    later = vapi.voucher(vapi.world())["voucher_id"]
    vapi.clock.advance(days=180)                                      # past its last day, not yet swept
    expired = vapi.order(later, deliver_by="2027-03-31")
    assert expired.status_code == 409 and expired.json()["state"] == "expired"
    voucher = vapi("GET", f"/api/v1/vouchers/{later}", "enterprise", ENT).json()
    assert (voucher["free_fen"], voucher["held_fen"]) == (2_000_000, 0)


def test_a_barred_agency_is_refused_with_its_rule(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    vapi.feed("on_agency", agency_registered(agency_id="ag-9", kind="trademark"))
    refused = vapi.order(vid, agency="ag-9")
    assert refused.status_code == 422 and refused.json()["rule"], refused.text
    voucher = vapi("GET", f"/api/v1/vouchers/{vid}", "enterprise", ENT).json()
    assert (voucher["free_fen"], voucher["held_fen"]) == (2_000_000, 0)
