"""Reading an upload: a multipart/form-data body decoded as it streams in (werkzeug's sans-IO
decoder), the file part hashed (SHA-256) and counted on the way into a spooled temporary file,
the upload refused with 413 the moment it passes the limit, never held whole in memory.

werkzeug's own form parser would spool the file too, but it would hash nothing and read past any
limit but the request's; this is the same decoder with the limit and the hash in the loop.
"""
import hashlib
import tempfile
from dataclasses import dataclass, field

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ipvkit.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

CHUNK = 64 * 1024
IN_MEMORY = 1024 * 1024   # a file up to this stays in memory; a bigger one spills to a temporary file
MAX_FIELD_BYTES = 1024    # kind and order_id are short; anything longer is not one of them
MAX_PARTS = 8
FORM_OVERHEAD = 16 * 1024  # part headers and boundaries around the file: what a body may add to it
FILE_FIELD = "file"


@dataclass
class Upload:
    fields: dict = field(default_factory=dict)
    stream: object = None      # the file, rewound; close it when done
    size: int = 0
    digest: bytes = b""        # SHA-256 of the file's bytes
    filename: str = None

    @property
    def sha256(self):
        return self.digest.hex()

    def close(self):
        if self.stream is not None:
            self.stream.close()


def too_large(limit):
    return PayloadTooLarge(f"the file is larger than {limit} bytes ({limit // (1024 * 1024)} MB), the most accepted",
                           limit_bytes=limit, message_zh=f"文件超过 {limit // (1024 * 1024)} MB 的上限，请压缩或拆分后上传")


def read_upload(request, limit):
    """The form's fields and its one file, or a 400/413/415 saying what is wrong."""
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary", "").encode("latin-1", "replace")
    if mimetype != "multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send the file as multipart/form-data (fields: file, kind, order_id)",
                                   reason="not_multipart", message_zh="请以 multipart/form-data 方式上传文件")
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD:
        raise too_large(limit)  # said before reading a byte of it
    # The decoder's own memory limit counts its whole buffer, file data included: the field limit
    # below is ours, and the buffer never holds more than a chunk and a boundary.
    decoder = MultipartDecoder(boundary, max_form_memory_size=None, max_parts=MAX_PARTS)
    # werkzeug reads nothing of a body without a Content-Length unless the server says the input is
    # terminated, which eventlet's does not; eventlet decodes a chunked body itself, so read that.
    chunked = request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    stream = request.environ["wsgi.input"] if chunked else request.stream
    upload, part, buffer, sha = Upload(), None, None, None
    try:
        while True:
            chunk = stream.read(CHUNK)
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)):
                if isinstance(event, File):
                    if event.name != FILE_FIELD or upload.stream is not None:
                        raise BadRequest("invalid body", fields={event.name: ["one file, in the field 'file'"]})
                    part, buffer, sha = event, None, hashlib.sha256()
                    upload.stream = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY)
                    upload.filename = event.filename
                elif isinstance(event, Field):
                    if event.name in upload.fields or event.name == FILE_FIELD:
                        raise BadRequest("invalid body", fields={event.name: ["given more than once, or not a file"]})
                    part, buffer = event, bytearray()
                elif isinstance(event, Data):
                    if isinstance(part, File):
                        upload.size += len(event.data)
                        if upload.size > limit:
                            raise too_large(limit)
                        sha.update(event.data)
                        upload.stream.write(event.data)
                    else:
                        buffer += event.data
                        if len(buffer) > MAX_FIELD_BYTES:
                            raise BadRequest("invalid body", fields={part.name: [f"longer than {MAX_FIELD_BYTES} bytes"]})
                        if not event.more_data:
                            try:
                                upload.fields[part.name] = buffer.decode("utf-8")
                            except UnicodeDecodeError:
                                raise BadRequest("invalid body", fields={part.name: ["not UTF-8 text"]})
                event = decoder.next_event()
            if isinstance(event, Epilogue) or not chunk:
                break
    except RequestEntityTooLarge:
        upload.close()
        raise BadRequest("invalid body", fields={"body": [f"more than {MAX_PARTS} parts"]})
    except ValueError as exc:
        upload.close()
        raise BadRequest(f"the multipart body is malformed or cut short ({exc})")
    except BaseException:
        upload.close()
        raise
    if upload.stream is None:
        raise BadRequest("invalid body", fields={FILE_FIELD: ["missing: send the file in the field 'file'"]})
    if upload.size == 0:
        upload.close()
        raise BadRequest("invalid body", fields={FILE_FIELD: ["the file is empty"]})
    upload.digest = sha.digest()
    upload.stream.seek(0)
    return upload
