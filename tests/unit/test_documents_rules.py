"""What a file is, judged by content alone (services/documents/domain.py), and which documents a delivery
may name (services/vouchers/domain.py): pure rules, real sample files, no servers."""
import io
import zipfile

import pytest

from ipvkit.errors import RuleRefused
from services.documents import domain
from services.vouchers.domain import delivery_documents
from tests import document_samples as samples


def detect(data, max_zip_bytes=10**8):
    return domain.detect(io.BytesIO(data), len(data), max_zip_bytes)


@pytest.mark.parametrize("name", sorted(samples.ACCEPTED))
def test_each_accepted_kind_is_recognised_by_its_content(name):
    make, media_type = samples.ACCEPTED[name]
    assert detect(make()) == media_type


@pytest.mark.parametrize("name", sorted(samples.REFUSED))
def test_each_refused_kind_gets_its_reason_in_english_and_chinese(name):
    make, reason = samples.REFUSED[name]
    with pytest.raises(domain.Refused) as refused:
        detect(make())
    assert refused.value.reason == reason and refused.value.message and refused.value.message_zh


def test_a_pdf_behind_junk_and_a_zip_that_unpacks_to_far_more_than_it_holds_are_refused():
    with pytest.raises(domain.Refused) as polyglot:
        detect(b"GIF89a" + samples.pdf())       # a PDF reader would still open it: a polyglot
    assert polyglot.value.reason == "unrecognised"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("OFD.xml", '<ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016"/>')
        bomb.writestr("Doc_0/zeros.bin", b"\0" * (50 << 20))
    with pytest.raises(domain.Refused) as refused:
        detect(out.getvalue())
    assert refused.value.reason == "ofd_malformed"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as other:   # OFD.xml at the root, but not an OFD document's
        other.writestr("OFD.xml", '<OFD xmlns="http://example.org/not-ofd"/>')
    with pytest.raises(domain.Refused) as refused:
        detect(out.getvalue())
    assert refused.value.reason == "ofd_malformed"


KNOWN = {"d_c": {"order_id": "o_1", "kind": "contract", "sha256": "c" * 64, "uploader_role": "agency",
                 "uploader_id": "ag-1"},
         "d_d": {"order_id": "o_1", "kind": "deliverable", "sha256": "d" * 64, "uploader_role": "enterprise",
                 "uploader_id": "E1"},
         "d_x": {"order_id": "o_2", "kind": "invoice", "sha256": "e" * 64, "uploader_role": "agency",
                 "uploader_id": "ag-1"},
         "d_r": {"order_id": "o_1", "kind": "invoice", "sha256": "f" * 64, "uploader_role": "agency",
                 "uploader_id": "ag-9"}}
PARTIES = {("agency", "ag-1"), ("enterprise", "E1")}
EVIDENCE = {"contract_ref": "HT-1", "invoice_no": "FP-1", "payment_proof_ref": "PZ-1", "official_no": None}


def test_a_delivery_names_its_parties_documents_and_the_deliverable_hash_comes_from_the_upload():
    documents, evidence = delivery_documents({"contract": "d_c", "deliverable": "d_d"}, KNOWN, "o_1", PARTIES,
                                             EVIDENCE)
    assert documents == [{"kind": "contract", "document_id": "d_c", "sha256": "c" * 64},
                         {"kind": "deliverable", "document_id": "d_d", "sha256": "d" * 64}]
    assert evidence == dict(EVIDENCE, deliverable_sha256="d" * 64)
    assert delivery_documents({}, {}, "o_1", PARTIES, dict(EVIDENCE, deliverable_sha256="a" * 64)) == (
        [], dict(EVIDENCE, deliverable_sha256="a" * 64))


@pytest.mark.parametrize("named,evidence,field", [
    ({"invoice": "d_x"}, dict(EVIDENCE, deliverable_sha256="a" * 64), "documents.invoice"),   # another order's
    ({"invoice": "d_r"}, dict(EVIDENCE, deliverable_sha256="a" * 64), "documents.invoice"),   # not a party's
    ({"invoice": "d_c"}, dict(EVIDENCE, deliverable_sha256="a" * 64), "documents.invoice"),   # a contract
    ({"contract": "d_none"}, dict(EVIDENCE, deliverable_sha256="a" * 64), "documents.contract"),
    ({"deliverable": "d_d"}, dict(EVIDENCE, deliverable_sha256="a" * 64), "documents.deliverable"),  # hashes differ
    ({"contract": "d_c"}, EVIDENCE, "deliverable_sha256"),                                   # nothing proves it
])
def test_a_delivery_naming_what_it_may_not_is_refused_naming_the_field(named, evidence, field):
    with pytest.raises(RuleRefused) as refused:
        delivery_documents(named, KNOWN, "o_1", PARTIES, evidence)
    assert refused.value.detail["rule"] == "delivery_documents" and field in refused.value.fields
