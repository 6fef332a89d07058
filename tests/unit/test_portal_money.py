"""The portal's money and time on a page: yuan from integer fen exactly, yuan typed by a person parsed
to fen or refused (never rounded), UTC shown in China Standard Time."""
import pytest
from wtforms.validators import ValidationError

from services.portal.app import create_app
from services.portal.formatting import local_time, yuan
from services.portal.views.enterprise import fen_from_yuan


@pytest.mark.parametrize("fen, shown", [(0, "¥0.00"), (5, "¥0.05"), (123456789, "¥1,234,567.89"), (-250, "-¥2.50"),
                                        (10**13, "¥100,000,000,000.00")])
def test_fen_is_shown_in_yuan_exactly(fen, shown):
    assert yuan(fen) == shown


@pytest.mark.parametrize("typed, fen", [("12000", 1_200_000), ("12,000.5", 1_200_050), ("0.01", 1), ("¥ 99.99", 9999)])
def test_yuan_typed_becomes_fen(typed, fen):
    assert fen_from_yuan(typed) == fen


@pytest.mark.parametrize("typed", ["12.345", "0", "-5", "abc", "", "1e3", "NaN", "100000000.01"])
def test_yuan_that_is_not_an_amount_is_refused_not_rounded(typed):
    with pytest.raises(ValidationError):
        fen_from_yuan(typed)


def test_utc_is_shown_in_china_standard_time(tmp_path):
    app = create_app(SECRET_KEY="k", MONGO_URI="mongodb://127.0.0.1:1/")
    with app.app_context():
        assert local_time("2026-12-31T16:30:00Z") == "2027-01-01 00:30"
        assert local_time("2026-06-01T00:00:00+00:00") == "2026-06-01 08:00"
