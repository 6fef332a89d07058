"""The kit's one text rule and its strict JSON reading (ipvkit.text, ipvkit.strictjson)."""
import pytest
from marshmallow import Schema, ValidationError

from ipvkit import strictjson
from ipvkit.errors import IllegalTransition
from ipvkit.events import MalformedEvent, parse
from ipvkit.text import Text


class Names(Schema):
    name = Text(required=True)
    reason = Text(multiline=True)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\r", "\x1b", "\x7f", "\x80", "\x9f", "\u2028", "\u202a", "\u202e",
                                  "\u2066", "\u2069", "\ud800", "\n", "\t"])
def test_a_single_line_field_refuses_controls_bidi_overrides_and_line_breaks_without_echoing_them(char):
    with pytest.raises(ValidationError) as refused:
        Names().load({"name": f"闽光{char}制造"})
    message = refused.value.messages["name"][0]
    assert f"U+{ord(char):04X}" in message and char not in message


def test_a_multi_line_field_takes_line_feeds_and_tabs_and_keeps_a_browsers_crlf_as_lf():
    assert Names().load({"name": "x", "reason": "第一行\r\n第二行\tA"})["reason"] == "第一行\n第二行\tA"
    for char in ("\r", "\x00", "\u202e", "\u2029"):
        with pytest.raises(ValidationError):
            Names().load({"name": "x", "reason": f"a{char}b"})


def test_ordinary_text_in_any_script_passes_unchanged():
    text = "福州闽光精密制造有限公司 (Fuzhou) — «Ünïcødé» 🙂 עברית ‎"
    assert Names().load({"name": text}) == {"name": text}


@pytest.mark.parametrize("raw,reason", [
    (b"[" * 10_000 + b"]" * 10_000, "more than 32 deep"),
    (b'{"a": "' + b"[" * 10_000 + b'"}', None),    # brackets inside a string are text
    (b'{"a": 1, "a": 2}', "more than once"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": 1e400}', "too large"),
    (b'{"a": ' + b"1" * 41 + b"}", "more than 40 digits"),
    (b'\xef\xbb\xbf{}', "byte order mark"),
    (b'{"a": "\xc3"}', "not UTF-8"),
    (b'{"a": ["\\ud800"]}', "lone surrogate"),
    (b'{"\\udfff": 1}', "lone surrogate"),
    (b'{' + b",".join(b'"k%d":1' % n for n in range(1001)) + b'}', "more than 1000 members"),
    (b'"' + b'\\"' * 20_000, "not JSON"),          # unterminated: one linear scan, then the parser's error
])
def test_strict_json_refuses_what_two_readers_could_read_differently(raw, reason):
    if reason is None:
        assert strictjson.loads(raw) == {"a": "[" * 10_000}
        return
    with pytest.raises(strictjson.Refused, match=reason):
        strictjson.loads(raw)


def test_a_refusal_names_the_place_without_repeating_a_surrogate():
    with pytest.raises(strictjson.Refused) as refused:
        strictjson.loads(b'{"tiers": [{"tier": "\\ud800"}], "price_fen": 1, "price_fen": 2}')
    assert refused.value.fields == {"price_fen": ["appears more than once"]}
    with pytest.raises(strictjson.Refused) as refused:
        strictjson.loads(b'{"tiers": [{"tier": "\\ud800"}]}')
    assert refused.value.fields == {"tiers.0.tier": ["must not contain a lone surrogate"]}


def test_events_off_the_wire_are_read_by_the_same_rule():
    for raw in (b"[" * 5000, b'{"type": "a.b", "type": "c.d"}', b'{"data": {"x": "\\ud800"}}'):
        with pytest.raises(MalformedEvent):
            parse(raw)


@pytest.mark.parametrize("kind,article", [("order", "an"), ("agency", "an"), ("voucher", "a"), ("programme", "a")])
def test_state_transition_messages_use_the_right_article(kind, article):
    assert IllegalTransition(kind, "paid", "confirm").message == f"cannot confirm {article} {kind} that is paid"


def test_no_service_says_it_is_not_built_yet():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    stale = [str(p.relative_to(root)) for p in root.glob("services/*/*.py") if "not built yet" in p.read_text()]
    assert not stale, stale
