"""The documents service's metrics. `outcome` and `operation` take a handful of fixed values."""
from prometheus_client import Counter, Gauge

BYTES_STORED = Gauge("ipv_documents_bytes_stored", "Bytes of every stored document (recomputed from the metadata)")
UPLOADS = Counter("ipv_document_uploads_total", "Uploads by outcome: stored, or why not",
                  ["outcome"])  # stored, refused_type, too_large, invalid, not_found, storage_error
STORAGE_ERRORS = Counter("ipv_document_storage_errors_total", "Failed calls to the object store",
                         ["operation"])  # put, get, head, hold, list, delete
