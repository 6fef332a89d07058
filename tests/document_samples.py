"""Real files of every kind the documents service takes or refuses, made by the libraries that make
them in the wild (pypdf, Pillow, zipfile), so a test never leans on a file checked into the repo."""
import io
import zipfile

from PIL import Image
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

INVOICE_NUMBER = "26332000000123456789"


def pdf(pages=1, text="HT-2026-001 知识产权服务合同", padding=0):
    """A PDF with a text content stream on each page; `padding` bytes of an uncompressed stream
    make it as large as a test needs."""
    writer = PdfWriter()
    for n in range(pages):
        page = writer.add_blank_page(width=595, height=842)
        content = DecodedStreamObject()
        body = f"BT /F1 12 Tf 72 770 Td ({text.encode('ascii', 'replace').decode()} p{n + 1}) Tj ET".encode()
        if padding and n == 0:
            body += b"\n%" + b"x" * padding
        content.set_data(body)
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({
            NameObject("/F1"): writer._add_object(DictionaryObject({
                NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica")}))})})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf():
    writer = PdfWriter(clone_from=io.BytesIO(pdf()))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated_pdf():
    whole = pdf(pages=3)
    return whole[: len(whole) // 2]


def image(fmt, size=(640, 480)):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def ofd():
    """A minimal OFD container (GB/T 33190): OFD.xml at the root pointing at its document."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as container:
        container.writestr("OFD.xml", '<?xml version="1.0" encoding="UTF-8"?>\n'
                           '<ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016" Version="1.1" DocType="OFD">'
                           '<ofd:DocBody><ofd:DocInfo><ofd:DocID>a1b2c3</ofd:DocID></ofd:DocInfo>'
                           '<ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot></ofd:DocBody></ofd:OFD>')
        container.writestr("Doc_0/Document.xml", '<?xml version="1.0" encoding="UTF-8"?>\n'
                           '<ofd:Document xmlns:ofd="http://www.ofdspec.org/2016"><ofd:CommonData>'
                           '<ofd:MaxUnitID>1</ofd:MaxUnitID></ofd:CommonData></ofd:Document>')
    return out.getvalue()


def plain_zip():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("合同.docx", b"not an OFD document")
    return out.getvalue()


def einvoice_xml():
    """The XML of a 数电票 as the national e-invoice platform issues it: root <EInvoice>."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<EInvoice>
  <Header><EIid>{INVOICE_NUMBER}</EIid><EInvoiceTag>SWEI3300</EInvoiceTag><Version>0.1</Version>
    <InherentLabel><EInvoiceType><LabelCode>02</LabelCode><LabelName>普通发票</LabelName></EInvoiceType></InherentLabel>
  </Header>
  <EInvoiceData>
    <SellerInformation><SellerIdNum>91331021MA2H1PT0XL</SellerIdNum><SellerName>玉环明诚专利代理事务所</SellerName></SellerInformation>
    <BuyerInformation><BuyerIdNum>91350100M000100Y43</BuyerIdNum><BuyerName>福州闽光精密制造有限公司</BuyerName></BuyerInformation>
    <BasicInformation><TotalAmWithoutTax>9433.96</TotalAmWithoutTax><TotalTaxAm>566.04</TotalTaxAm>
      <TotalTax-includedAmount>10000.00</TotalTax-includedAmount><RequestTime>2026-09-01 10:12:00</RequestTime></BasicInformation>
    <IssuItemInformation><ItemName>*现代服务*专利导航分析</ItemName><Amount>9433.96</Amount><TaxRate>0.06</TaxRate></IssuItemInformation>
  </EInvoiceData>
  <TaxSupervisionInfo><InvoiceNumber>{INVOICE_NUMBER}</InvoiceNumber><IssueTime>2026-09-01</IssueTime></TaxSupervisionInfo>
</EInvoice>
""".encode("utf-8")


def entity_bomb_xml():
    """An e-invoice root behind a DTD with nested entities ("billion laughs")."""
    return b"""<?xml version="1.0"?>
<!DOCTYPE EInvoice [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<EInvoice><Header><EIid>&b;</EIid></Header></EInvoice>
"""


def other_xml():
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def exe():
    """The start of a Windows executable: an MZ header and its PE signature."""
    header = bytearray(b"MZ" + b"\x90\x00" * 29 + b"\x00" * 2 + b"\x80\x00\x00\x00")
    return bytes(header.ljust(0x80, b"\x00")) + b"PE\x00\x00" + b"\x4c\x01" + b"\x00" * 200


def html():
    return b"<!DOCTYPE html><html><body><script>document.location='http://evil.example'</script></body></html>"


def gif():
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, format="GIF")
    return out.getvalue()


ACCEPTED = {  # name -> (bytes factory, the media type the service must detect)
    "pdf": (pdf, "application/pdf"),
    "jpeg": (lambda: image("JPEG"), "image/jpeg"),
    "png": (lambda: image("PNG"), "image/png"),
    "ofd": (ofd, "application/ofd"),
    "einvoice_xml": (einvoice_xml, "application/xml"),
}
REFUSED = {  # name -> (bytes factory, the reason the service must give)
    "encrypted_pdf": (encrypted_pdf, "pdf_encrypted"),
    "truncated_pdf": (truncated_pdf, "pdf_malformed"),
    "truncated_jpeg": (lambda: image("JPEG")[:700], "image_malformed"),
    "exe_named_pdf": (exe, "unrecognised"),
    "zip_named_pdf": (plain_zip, "zip_not_ofd"),
    "html_named_pdf": (html, "unrecognised"),
    "gif": (gif, "unrecognised"),
    "entity_bomb_xml": (entity_bomb_xml, "xml_malformed"),
    "svg_xml": (other_xml, "xml_not_einvoice"),
}
