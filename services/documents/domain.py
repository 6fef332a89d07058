"""Rules about uploaded files: what a file is, judged by its content (magic bytes, then a real
parse by the format's own library), never by its name or the type the client declared; who may
see an order's files. Data in, decisions out; no I/O beyond reading the file handed in.

Accepted: PDF (pypdf), JPEG and PNG (Pillow), OFD (a ZIP container with OFD.xml at its root,
GB/T 33190) and the XML of 全电发票/数电票 (root element `EInvoice`, parsed by defusedxml with DTDs and
entities forbidden). Anything else is refused with a reason a person can act on.
"""
import warnings
import zipfile

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_xml
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError


READERS_STAFF = ("officer", "auditor")
PARTIES = ("enterprise", "agency")

# Magic numbers at offset 0. A PDF may legally start after some junk, but a file that does is
# what polyglot tricks look like; real PDFs from scanners, office suites and tax platforms start here.
PDF_MAGIC = b"%PDF-"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
XML_START = (b"<?xml", b"<")
UTF8_BOM = b"\xef\xbb\xbf"
HTML_START = (b"<!doctype html", b"<html")

OFD_NAMESPACE = "http://www.ofdspec.org/2016"
EINVOICE_ROOT = "EInvoice"
EINVOICE_PARTS = ("Header", "EInvoiceData", "TaxSupervisionInfo")
MAX_IMAGE_PIXELS = 80_000_000    # a 10,000 × 8,000 scan; more is a decompression bomb, not a receipt
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_RATIO = 200              # an OFD's XML compresses well, but not 200:1 over the whole container
MAX_XML_BYTES = 5 * 1024 * 1024  # a 数电票 XML is a few KB; a larger XML is not an invoice


class Refused(Exception):
    """Not a file this service takes: `reason` is a stable code, the messages say why in English
    and Chinese."""

    def __init__(self, reason, message, message_zh):
        super().__init__(message)
        self.reason, self.message, self.message_zh = reason, message, message_zh


ACCEPTED_ZH = "仅接受 PDF、JPEG、PNG、OFD 版式文件或全电发票（数电票）XML"


def detect(stream, size, max_zip_bytes):
    """The media type of the file in `stream` (seekable, `size` bytes), or Refused. `max_zip_bytes` bounds
    what an OFD container may unpack to."""
    stream.seek(0)
    head = stream.read(64)
    stream.seek(0)
    if head.startswith(PDF_MAGIC):
        return _pdf(stream, size)
    if head.startswith(JPEG_MAGIC):
        return _image(stream, "JPEG", "image/jpeg")
    if head.startswith(PNG_MAGIC):
        return _image(stream, "PNG", "image/png")
    if head.startswith(ZIP_MAGIC):
        return _ofd(stream, max_zip_bytes)
    text = (head[len(UTF8_BOM):] if head.startswith(UTF8_BOM) else head).lstrip()
    if text.startswith(XML_START) and not text.lower().startswith(HTML_START):
        return _einvoice_xml(stream, size)
    raise Refused("unrecognised", "not a PDF, JPEG, PNG, OFD or e-invoice XML file (judged by its content)",
                  f"无法识别的文件类型（按文件内容判断，与文件名无关）：{ACCEPTED_ZH}")


def _pdf(stream, size):
    # A complete PDF ends with %%EOF (ISO 32000-1 §7.5.5); an upload cut short does not. pypdf's
    # lenient mode (which real scanners' and office suites' small deviations need) would only warn.
    stream.seek(max(0, size - 1024))
    if b"%%EOF" not in stream.read():
        raise Refused("pdf_malformed", "the PDF has no end-of-file marker: it is truncated or damaged",
                      "PDF 文件不完整（可能上传中断或文件已损坏），无法读取：请重新导出后上传")
    stream.seek(0)
    try:
        reader = PdfReader(stream, strict=False)
        if reader.is_encrypted:
            raise Refused("pdf_encrypted", "the PDF is encrypted or password-protected: upload it without a password",
                          "PDF 文件已加密或设有密码，审核和审计无法打开：请上传未加密的版本")
        pages = len(reader.pages)
        for page in reader.pages:  # every page's content streams must decode, not just the cross-reference table
            contents = page.get_contents()
            if contents is not None:
                contents.get_data()
    except Refused:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf raises its own errors for most damage, plain ones for some; each means "not readable".
        raise Refused("pdf_malformed", f"the PDF cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                      "it may be truncated or damaged", "PDF 文件已损坏或不完整（可能上传中断），无法读取：请重新导出后上传")
    if pages == 0:
        raise Refused("pdf_malformed", "the PDF has no pages", "PDF 文件没有任何页面")
    return "application/pdf"


def _image(stream, expected, media_type):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=[expected]) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise Refused("image_too_large", f"the image has {image.width}×{image.height} pixels; at most "
                                  f"{MAX_IMAGE_PIXELS:,} are accepted", "图片像素过多，请缩小后上传")
                image.verify()  # structure and checksums (PNG CRCs)
            stream.seek(0)
            with Image.open(stream, formats=[expected]) as image:
                if expected == "JPEG":
                    image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))  # decode small: all data, little memory
                image.load()  # a truncated image fails here
    except Refused:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise Refused("image_malformed", f"the {expected} image cannot be decoded ({str(exc)[:200]})",
                      "图片文件已损坏或不完整，无法打开：请重新拍摄或导出后上传")
    finally:
        stream.seek(0)
    return media_type


def _ofd(stream, max_zip_bytes):
    """An OFD file is a ZIP container whose root holds OFD.xml, the document's entry point
    (GB/T 33190-2016 §7.4), with root element `ofd:OFD`."""
    try:
        with zipfile.ZipFile(stream) as container:
            entries = container.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise Refused("ofd_malformed", f"the container holds {len(entries)} entries", "OFD 文件结构异常")
            unpacked = sum(e.file_size for e in entries)
            packed = sum(e.compress_size for e in entries) or 1
            if unpacked > max_zip_bytes or unpacked / packed > MAX_ZIP_RATIO:
                raise Refused("ofd_malformed", "the container unpacks to far more than it holds (a ZIP bomb?)",
                              "OFD 文件结构异常（解压后体积异常）")
            if "OFD.xml" not in container.namelist():
                raise Refused("zip_not_ofd", "a ZIP archive without OFD.xml at its root is not an OFD document",
                              f"压缩包不是 OFD 版式文件（根目录缺少 OFD.xml）：{ACCEPTED_ZH}")
            entry = container.read("OFD.xml")
            bad = container.testzip()  # every entry decompresses with a matching CRC
            if bad is not None:
                raise Refused("ofd_malformed", f"entry {bad!r} of the container is damaged", "OFD 文件已损坏")
    except Refused:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise Refused("ofd_malformed", f"the ZIP container cannot be read ({str(exc)[:200]})",
                      "OFD 文件已损坏或不完整，无法读取")
    finally:
        stream.seek(0)
    root = _parse_xml(entry, "ofd_malformed", "OFD.xml")
    if root.tag != f"{{{OFD_NAMESPACE}}}OFD":
        raise Refused("ofd_malformed", f"OFD.xml's root element is {root.tag!r}, not ofd:OFD ({OFD_NAMESPACE})",
                      "OFD 文件的 OFD.xml 不符合 GB/T 33190 规定")
    return "application/ofd"


def _einvoice_xml(stream, size):
    if size > MAX_XML_BYTES:
        raise Refused("xml_not_einvoice", f"an XML file of {size} bytes is not an e-invoice (those are a few KB)",
                      "XML 文件过大，不是全电发票")
    root = _parse_xml(stream.read(), "xml_malformed", "the XML file")
    stream.seek(0)
    local = root.tag.rpartition("}")[2]
    if local != EINVOICE_ROOT or not any(child.tag.rpartition("}")[2] in EINVOICE_PARTS for child in root):
        raise Refused("xml_not_einvoice", f"the XML's root element is {local!r}: only the XML of a 全电发票/数电票 "
                      f"(root <{EINVOICE_ROOT}> with Header, EInvoiceData or TaxSupervisionInfo) is accepted",
                      f"XML 文件不是全电发票（数电票）：根元素应为 {EINVOICE_ROOT}")
    return "application/xml"


def _parse_xml(data, reason, what):
    try:
        return safe_xml(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise Refused(reason, f"{what} declares a DTD or entities, which are not accepted ({type(exc).__name__})",
                      "XML 文件含有 DTD 或实体声明，出于安全原因不予接受")
    except Exception as exc:  # noqa: BLE001 - ElementTree raises ParseError, expat others: all mean malformed
        raise Refused(reason, f"{what} is not well-formed XML ({str(exc)[:200]})", "XML 文件格式错误，无法解析")


# -- who may do what ----------------------------------------------------------------------------
def party_of(order, principal):
    """Is the principal the order's enterprise or agency?"""
    if order is None:
        return False
    return ((principal.role == "enterprise" and order["enterprise_id"] == principal.id)
            or (principal.role == "agency" and order["agency_id"] == principal.id))


def may_read(order, principal):
    """The order's enterprise and agency, officers and auditors; nobody else."""
    return principal.role in READERS_STAFF or party_of(order, principal)
