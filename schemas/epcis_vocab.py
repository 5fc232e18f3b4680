"""lothub's own identifiers and vocabulary in EPCIS 2.0 documents, shared by export and capture.

GS1 identifiers (GTIN + lot, GLN) are used where a lot, place or party has one. What has no
GS1 identity is named by a URN in lothub's private namespace ``urn:lothub:`` (not registered
with IANA: it names things inside one lothub enterprise and its trading partners that agree
to it)::

    urn:lothub:lot:<SITE>:<CODE>        an enterprise lot SITE:CODE (an EPC class: quantities
                                        of it are counted in quantityList)
    urn:lothub:loc:<SITE>:<ID>          a location; SITE empty for a partner's place
    urn:lothub:party:<ID>               a supplier or customer
    urn:lothub:doc:<TYPE>:<NUMBER>      a reference document (business transaction)
    urn:lothub:tf:<ID>                  a transformation or batch id (``transformationID``)
    urn:lothub:event:<ID>               an event id that is not a UUID (``eventID``)
    urn:lothub:redacted:<TOKEN>         a lot the reader may not see

Every part is percent-encoded (RFC 3986: all but ``A-Z a-z 0-9 - . _ ~``), so ``:`` inside a
part never splits it and :func:`parse_urn` gives back exactly what :func:`urn` was given.

Master data of a lot (``urn:epcglobal:epcis:vtype:EPCClass`` element with the lot URN as id)
carries the item code and the supplier's lot in :data:`ITEM_CODE_ATTRIBUTE` and
:data:`SUPPLIER_LOT_ATTRIBUTE`: EPCIS has no field for either when the lot is not an LGTIN.

Example::

    >>> urn("lot", "ALP", "ALP-20261102-001")
    'urn:lothub:lot:ALP:ALP-20261102-001'
    >>> parse_urn("urn:lothub:doc:PO:PO%3A45001")
    ('doc', ('PO', 'PO:45001'))
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote

from schemas.model import LotStatus, TransformationKind

PREFIX: Final = "urn:lothub:"
#: how many parts each kind of lothub URN has
KINDS: Final = {"lot": 2, "loc": 2, "party": 1, "doc": 2, "tf": 1, "event": 1, "redacted": 1}
ITEM_CODE_ATTRIBUTE: Final = "urn:lothub:mda:itemCode"
SUPPLIER_LOT_ATTRIBUTE: Final = "urn:lothub:mda:supplierLot"

#: Enterprise status -> the disposition a ``persistentDisposition`` sets (CBV where one means
#: the same; a private URI where CBV has none). To re-import statuses, map these values under
#: ``[sites.<code>.status_codes]``.
STATUS_DISPOSITIONS: Final = {
    LotStatus.RELEASED: "available",
    LotStatus.ON_HOLD: "unavailable",
    LotStatus.QUARANTINE: "urn:lothub:disp:quarantine",
    LotStatus.REJECTED: "non_conformant",
    LotStatus.EXPIRED: "expired",
}
#: Transformation kind -> ``bizStep`` of its TransformationEvent (capture maps them back).
TRANSFORMATION_BIZSTEPS: Final = {
    TransformationKind.PRODUCTION: "commissioning",
    TransformationKind.REPACK: "repackaging",
    TransformationKind.BLEND: "urn:lothub:bizstep:blend",
    TransformationKind.SPLIT: "urn:lothub:bizstep:split",
    TransformationKind.REWORK: "urn:lothub:bizstep:rework",
    TransformationKind.RELABEL: "urn:lothub:bizstep:relabel",
}


def urn(kind: str, *parts: str) -> str:
    """The lothub URN of ``kind`` with ``parts`` (each percent-encoded)."""
    if KINDS.get(kind) != len(parts):
        raise ValueError(f"a urn:lothub:{kind} has {KINDS.get(kind)} parts, not {len(parts)}")
    return PREFIX + kind + "".join(":" + quote(p, safe="") for p in parts)


def parse_urn(uri: str) -> tuple[str, tuple[str, ...]] | None:
    """``(kind, parts)`` of a lothub URN, or None if ``uri`` is not one (of a known kind)."""
    if not uri.startswith(PREFIX):
        return None
    kind, *parts = uri[len(PREFIX) :].split(":")
    if KINDS.get(kind) != len(parts):
        return None
    return kind, tuple(unquote(p) for p in parts)


def lot_urn(lot_id: str) -> str:
    """The URN of an enterprise lot id ``SITE:CODE``."""
    site, code = lot_id.split(":", 1)
    return urn("lot", site, code)
