"""Rec 20 units convert through pint, never through a hand-written table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schemas.errors import EventValidationError
from schemas.units import canonical_unit, convert, is_rec20, to_canonical


def test_pound_to_kilogram_uses_the_exact_definition() -> None:
    assert convert(Decimal(1), "LBR", "KGM") == Decimal("0.45359237")


def test_us_gallon_to_litre() -> None:
    assert convert(Decimal(1), "GLL", "LTR") == Decimal("3.785411784")


def test_tonne_to_kilogram_and_back() -> None:
    assert convert(Decimal("1.5"), "TNE", "KGM") == Decimal(1500)
    assert convert(Decimal(1500), "KGM", "TNE") == Decimal("1.5")


@pytest.mark.parametrize(
    ("code", "canonical"),
    [("GRM", "KGM"), ("ONZ", "KGM"), ("MLT", "LTR"), ("MTQ", "LTR"), ("EA", "H87"), ("KGM", "KGM")],
)
def test_canonical_unit_per_dimension(code: str, canonical: str) -> None:
    assert canonical_unit(code) == canonical


def test_to_canonical_leaves_canonical_values_alone() -> None:
    assert to_canonical(Decimal("12.5"), "KGM") == (Decimal("12.5"), "KGM")
    assert to_canonical(Decimal(2), "MTQ") == (Decimal(2000), "LTR")


def test_mass_never_converts_to_pieces() -> None:
    with pytest.raises(EventValidationError, match="different dimensions"):
        convert(Decimal(1), "KGM", "H87")


def test_unknown_code_names_the_supported_ones() -> None:
    assert not is_rec20("sacks")
    with pytest.raises(EventValidationError, match="KGM"):
        canonical_unit("sacks")
