"""The one rule for text a person or a system typed, in every service: what characters a free-text
field may hold. Every text field of every API body, query and event schema is a `Text` (or a
narrower field: an enum, a code with its own pattern, a credit code).

Refused everywhere: C0 controls (U+0000-U+001F) and DEL, C1 controls (U+0080-U+009F), lone
surrogates (not Unicode: nothing can store or print them), the line and paragraph separators
U+2028/U+2029, and the bidirectional embeddings, overrides and isolates U+202A-U+202E and
U+2066-U+2069, which make a name display reversed in officer screens and CSV exports.
A multi-line field (a reason, a note, a resolution) also takes line feeds and tabs; a browser's
CR LF from a textarea is kept as LF. Error messages name the character by its code point and never
echo the value, so an answer cannot carry the bad text on.
"""
import re

from marshmallow import ValidationError, fields

_BIDI = "\u202a-\u202e\u2066-\u2069"
_ALWAYS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff" + _BIDI
SINGLE_LINE_REFUSED = re.compile(f"[\t\n{_ALWAYS}]")
MULTI_LINE_REFUSED = re.compile(f"[{_ALWAYS}]")
SURROGATE = re.compile("[\ud800-\udfff]")


def describe(char):
    code = f"U+{ord(char):04X}"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate ({code}), which is not valid Unicode"
    if "\u202a" <= char <= "\u202e" or "\u2066" <= char <= "\u2069":
        return f"a bidirectional control character ({code})"
    if char in "\n\t":
        return f"a line break or tab ({code}); this field is one line"
    return f"a control character ({code})"


def text_problem(value, multiline=False):
    """Why `value` may not be stored as text, or None."""
    found = (MULTI_LINE_REFUSED if multiline else SINGLE_LINE_REFUSED).search(value)
    return f"must not contain {describe(found.group())}" if found else None


def printable(value):
    """`value` made safe to echo in an answer or a log (lone surrogates as \\udxxx escapes)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if SURROGATE.search(value) else value


class Text(fields.String):
    """A string field that applies the rule above; `multiline=True` for reasons, notes and the like."""

    def __init__(self, *args, multiline=False, **kwargs):
        self.multiline = multiline
        super().__init__(*args, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if self.multiline:
            value = value.replace("\r\n", "\n")
        problem = text_problem(value, self.multiline)
        if problem:
            raise ValidationError(problem)
        return value
