"""UN/CEFACT Recommendation 20 unit codes and conversions between them, through pint.

The table below only names which pint unit each Rec 20 code is; every conversion
factor comes from pint. Enterprise quantities are carried in the canonical unit of
their dimension (:data:`CANONICAL`): mass in KGM, volume in LTR, counts in H87.

Example::

    >>> from decimal import Decimal
    >>> convert(Decimal("2204.622622"), "LBR", "KGM").quantize(Decimal("0.001"))
    Decimal('1000.000')
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

import pint

from schemas.errors import EventValidationError

#: Rec 20 common code -> pint unit expression.
REC20_TO_PINT: dict[str, str] = {
    # mass
    "KGM": "kilogram",
    "GRM": "gram",
    "MGM": "milligram",
    "TNE": "metric_ton",
    "LBR": "pound",
    "ONZ": "ounce",
    # volume
    "LTR": "liter",
    "MLT": "milliliter",
    "HLT": "hectoliter",
    "MTQ": "meter ** 3",
    "GLL": "US_liquid_gallon",
    # counts
    "H87": "piece",
    "EA": "piece",
    "C62": "piece",
}

#: Dimension (as pint reports it) -> the enterprise unit for it.
CANONICAL: dict[str, str] = {
    "[mass]": "KGM",
    "[length] ** 3": "LTR",
    "[piece]": "H87",
}


@lru_cache(maxsize=1)
def _registry() -> Any:
    registry: Any = pint.UnitRegistry(non_int_type=Decimal)
    # a dimension of its own, so pieces never convert to or from mass
    registry.define("piece = [piece]")
    return registry


def is_rec20(code: str) -> bool:
    """True if ``code`` is a Rec 20 code this hub can convert."""
    return code in REC20_TO_PINT


def _unit(code: str) -> Any:
    if code not in REC20_TO_PINT:
        raise EventValidationError(
            f"unit {code!r} is not a supported UN/CEFACT Rec 20 code "
            f"(supported: {', '.join(sorted(REC20_TO_PINT))})"
        )
    return _registry().Unit(REC20_TO_PINT[code])


def convert(value: Decimal, from_code: str, to_code: str) -> Decimal:
    """Convert ``value`` between two Rec 20 units; raises if dimensions differ."""
    registry = _registry()
    try:
        converted = registry.Quantity(value, _unit(from_code)).to(_unit(to_code))
    except pint.DimensionalityError as exc:
        raise EventValidationError(
            f"cannot convert {from_code} to {to_code}: different dimensions"
        ) from exc
    return Decimal(converted.magnitude)


@cache  # a few dozen codes; asking pint each time was a twentieth of a worker's time
def canonical_unit(code: str) -> str:
    """The enterprise unit for the dimension of ``code`` (KGM, LTR or H87)."""
    dimensionality = str(_unit(code).dimensionality)
    try:
        return CANONICAL[dimensionality]
    except KeyError as exc:  # a Rec 20 code whose dimension we do not carry
        raise EventValidationError(f"unit {code!r} has no enterprise dimension") from exc


def to_canonical(value: Decimal, code: str) -> tuple[Decimal, str]:
    """``(value, unit)`` expressed in the enterprise unit of its dimension."""
    target = canonical_unit(code)
    return (value if target == code else convert(value, code, target)), target
