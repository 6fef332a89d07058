"""JSON from outside (HTTP bodies, events off the wire), read one strict way, so that everything
reading a message (a proxy, a log, a firewall, this service) sees the same thing and nothing in it
can crash the reader:

- UTF-8 only (RFC 8259), no byte order mark;
- nesting at most MAX_DEPTH deep, counted before parsing (a deep body made the parser raise
  RecursionError);
- no key twice in one object (last-one-wins let a proxy read another price than the service);
- at most MAX_MEMBERS members in one object;
- no NaN/Infinity (not JSON), no number that overflows a float, no integer longer than 40 digits;
- no lone surrogate (`"\\ud800"`) in any key or string: nothing can store or print one.

`loads` raises `Refused(message, fields)`, the fields naming where the problem is.
"""
import json
import math
import re

from ipvkit.text import SURROGATE, printable

MAX_DEPTH = 32
MAX_MEMBERS = 1000
MAX_INTEGER_DIGITS = 40

# A string (its closing quote optional, so an unterminated one ends the scan instead of being
# retried from every later quote) or a bracket: one linear pass.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class Refused(ValueError):
    def __init__(self, message, fields=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


def too_deep(raw):
    """Do `raw`'s arrays and objects nest more than MAX_DEPTH deep (brackets inside strings do not
    count)?"""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    level = 0
    for token in _TOKENS.finditer(raw):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            level += 1
            if level > MAX_DEPTH:
                return True
        elif char in (b"]", b"}"):
            level -= 1
    return False


def _object(pairs):
    if len(pairs) > MAX_MEMBERS:
        raise Refused(f"an object has more than {MAX_MEMBERS} members")
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen, twice = set(), []
        for key, _ in pairs:
            if key in seen:
                twice.append(key)
            seen.add(key)
        raise Refused("a key appears more than once in one object",
                      fields={printable(k): ["appears more than once"] for k in twice})
    return obj


def _constant(name):
    raise Refused(f"{name} is not a JSON number")


def _float(text):
    value = float(text)
    if not math.isfinite(value):
        raise Refused("a number is too large")
    return value


def _int(text):
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise Refused(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _surrogates(value):
    """Paths of keys and strings holding a lone surrogate."""
    found, stack = [], [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                found.append(path)
        elif isinstance(item, dict):
            for key, inner in item.items():
                inner_path = f"{path}.{key}" if path else key
                if SURROGATE.search(key):
                    found.append(inner_path)
                else:
                    stack.append((inner_path, inner))
        elif isinstance(item, list):
            stack.extend((f"{path}.{n}" if path else str(n), inner) for n, inner in enumerate(item))
    return sorted(found)


def loads(raw, what="body"):
    """`raw` (bytes) -> the parsed value, or Refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"{what} is not UTF-8 (byte {exc.start})")
    if text.startswith("\ufeff"):
        raise Refused(f"{what} starts with a byte order mark; send UTF-8 without one")
    if too_deep(raw):
        raise Refused(f"{what} nests arrays and objects more than {MAX_DEPTH} deep")
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float,
                           parse_int=_int)
    except Refused:
        raise
    except ValueError as exc:  # JSONDecodeError says where, and never quotes the text
        raise Refused(f"{what} is not JSON: {exc}")
    if _ESCAPED_SURROGATE.search(raw):
        bad = _surrogates(value)
        if bad:
            raise Refused(f"{what} holds a lone surrogate, which is not valid Unicode",
                          fields={printable(p) or what: ["must not contain a lone surrogate"] for p in bad})
    return value
