"""One JSON object per log line, with the service and, inside a worker, its correlation id."""
import json
import logging
import re

_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]+")


class JsonFormatter(logging.Formatter):
    def __init__(self, service="", **kwargs):
        super().__init__()
        self.service = service

    def format(self, record):
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "service": self.service, "logger": record.name,
                 "message": _BEARER.sub("Bearer [redacted]", record.getMessage())}
        for key in ("correlation_id", "event_type"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


logging.Formatter.converter = __import__("time").gmtime
