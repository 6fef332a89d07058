"""统一社会信用代码 (GB 32100-2015) check character, through the schema field the API uses."""
import pytest
from marshmallow import Schema, ValidationError

from ipvkit.contracts.common import CreditCode

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
VALID = ["91350100M000100Y43",   # the standard's own worked example
         "91310115MA1K3YJ15R"]   # domain-notes synthetic example, checked by hand there


class Holder(Schema):
    code = CreditCode(required=True)


def load(code):
    return Holder().load({"code": code})["code"]


@pytest.mark.parametrize("code", VALID)
def test_valid_codes_pass(code):
    assert load(code) == code


def test_lower_case_and_spaces_are_normalised():
    assert load(" 91350100m000100y43 ") == "91350100M000100Y43"


def test_the_standards_misprinted_check_character_is_refused():
    with pytest.raises(ValidationError):
        load("91350100M000100Y4Z")  # Z is not even in the alphabet
    with pytest.raises(ValidationError, match="check character"):
        load("91350100M000100Y44")


@pytest.mark.parametrize("code", VALID)
def test_every_single_character_corruption_is_caught(code):
    caught = 0
    for position in range(18):
        for replacement in ALPHABET + "IOZSV":
            if replacement == code[position]:
                continue
            corrupted = code[:position] + replacement + code[position + 1:]
            with pytest.raises(ValidationError):
                load(corrupted)
            caught += 1
    assert caught == 18 * (len(ALPHABET) + 5 - 1)


@pytest.mark.parametrize("bad", ["", "9135010", "91350100M000100Y431", 91350100, None, "９１３５０１００Ｍ０００１００Ｙ４３"])
def test_wrong_length_type_or_characters(bad):
    with pytest.raises(ValidationError):
        load(bad)
