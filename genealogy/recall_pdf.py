"""A stored recall packet as a printable PDF, the form a regulator or auditor is handed.

Pages (A4 landscape): a header (recall id, who asked, when, what was asked, how long the
answer took, the summary), the affected lots and where they are now, the customers and
shipments, transfers in transit, the mass balance of every affected lot with each residual
highlighted, and the data gaps. Built with fpdf2 from the packet's JSON (as stored and, for
a site user, as redacted), so the PDF says exactly what the API says.

The PDF core fonts cover Latin-1 only; any other character is printed as ``?`` rather than
failing the export.

Example::

    pdf = recall_pdf(packet_json, requested_by="qa-brunner")
    Path("recall.pdf").write_bytes(pdf)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from fpdf import FPDF
from fpdf.fonts import FontFace

BALANCE_COLUMNS: Final = ("received", "produced", "returned", "consumed", "shipped",
                          "transferred_out", "scrapped", "adjusted", "on_hand", "residual")  # fmt: skip
#: Fill of a mass-balance row that does not close (a residual, or nothing entered the lot).
RESIDUAL_FILL: Final = (255, 205, 205)
_HEADING: Final = FontFace(emphasis="BOLD", fill_color=(225, 225, 225))
_FLAGGED: Final = FontFace(emphasis="BOLD", fill_color=RESIDUAL_FILL)


def _text(value: Any) -> str:
    """A cell's text: Latin-1 (what core fonts print), empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).encode("latin-1", "replace").decode("latin-1")


def _qty(value: Any) -> str:
    """An exact decimal without trailing zeros (``1000.000000`` -> ``1000``)."""
    if value in (None, ""):
        return ""
    try:
        return f"{Decimal(str(value)).normalize():f}"
    except InvalidOperation:
        return _text(value)


def _request(request: dict[str, Any]) -> str:
    if request.get("lots"):
        return "lots " + ", ".join(request["lots"])
    if request.get("supplier"):
        return f"supplier {request['supplier']}"
    return f"item {request.get('item')} from {request.get('date_from')} to {request.get('date_to')}"


class _Packet(FPDF):
    def __init__(self, recall_id: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.recall_id = recall_id
        self.set_auto_page_break(auto=True, margin=15)
        self.set_title(f"Recall packet {recall_id}")
        self.set_creator("lothub")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, _text(f"lothub recall packet {self.recall_id}"), align="L")
        self.cell(0, 5, f"page {self.page_no()}/{{nb}}", align="R")

    def heading(self, title: str) -> None:
        self.ln(3)
        self.set_font("Helvetica", "B", 12)
        self.cell(0, 8, _text(title), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", size=8)

    def rows(
        self,
        header: Sequence[str],
        body: Sequence[Sequence[Any]],
        widths: Sequence[int],
        flagged: Sequence[bool] = (),
    ) -> None:
        """A table; rows whose ``flagged`` is true are printed bold on red."""
        if not body:
            self.cell(0, 6, "none", new_x="LMARGIN", new_y="NEXT")
            return
        with self.table(col_widths=tuple(widths), headings_style=_HEADING, text_align="LEFT",
                        line_height=4.5) as table:  # fmt: skip
            table.row([_text(h) for h in header])
            for i, values in enumerate(body):
                style = _FLAGGED if i < len(flagged) and flagged[i] else None
                row = table.row()
                for value in values:
                    row.cell(_text(value), style=style)


def recall_pdf(
    packet: dict[str, Any], *, requested_by: str | None, printed_at: datetime | None = None
) -> bytes:
    """The packet (its stored JSON form) as a PDF document."""
    pdf = _Packet(packet["recall_id"])
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Mock recall packet", new_x="LMARGIN", new_y="NEXT")
    summary = packet.get("summary", {})
    facts = [
        ("Recall", packet["recall_id"]),
        ("Requested by", requested_by or "unknown"),
        ("Requested at", packet["created_at"]),
        ("Asked for", _request(packet.get("request", {}))),
        ("Time taken", f"{packet['duration_ms']} ms"),
        ("Affected lots", f"{summary.get('affected_lots')} ({summary.get('seed_lots')} suspect)"),
        ("Customers / shipments", f"{summary.get('customers')} / {summary.get('shipments')}"),
        ("In transit", summary.get("in_transit")),
        ("Mass balance closes", summary.get("mass_balance_closes")),
        ("Data gaps", summary.get("gaps")),
        ("Printed at", (printed_at or datetime.now(UTC)).isoformat(timespec="seconds")),
    ]
    pdf.set_font("Helvetica", size=9)
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(45, 5, _text(label))
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(0, 5, _text(value), new_x="LMARGIN", new_y="NEXT")

    lots = packet.get("lots", [])
    pdf.heading("Affected lots and where they are now")
    pdf.rows(
        ["lot", "site", "item", "status", "suspect", "depth", "last location", "on hand",
         "suspect share", "suspect kg"],
        [[lot["lot_id"], lot["site"], lot.get("item_code"), lot.get("status"), lot.get("seed"),
          lot.get("depth"), lot.get("last_location"),
          "; ".join(f"{_qty(b.get('on_hand'))} {b['unit']}" for b in lot.get("balances", [])),
          _qty(lot.get("suspect_share")), _qty(lot.get("suspect_kg"))] for lot in lots],
        [46, 14, 24, 24, 16, 12, 40, 40, 26, 26],
    )  # fmt: skip

    pdf.heading("Customers and shipments")
    pdf.rows(
        ["shipped lot", "customer", "ship to", "document", "shipped at", "quantity", "unit",
         "suspect kg"],
        [[s["lot_id"], s.get("customer"), s.get("ship_to"), s.get("document"), s.get("shipped_at"),
          _qty(s.get("quantity")), s.get("unit"), _qty(s.get("suspect_kg"))]
         for s in packet.get("shipments", [])],
        [40, 46, 46, 38, 44, 24, 14, 22],
    )  # fmt: skip

    pdf.heading("Transfers in transit")
    pdf.rows(
        ["lot", "transfer", "to", "shipped at", "quantity", "unit"],
        [[t["lot_id"], t.get("transfer_id"), t.get("to"), t.get("shipped_at"),
          _qty(t.get("quantity")), t.get("unit")] for t in packet.get("in_transit", [])],
        [50, 40, 50, 50, 40, 20],
    )  # fmt: skip

    pdf.heading("Mass balance (received + produced + returned = consumed + shipped + "
                "transferred out + scrapped +/- adjusted + on hand; residual: left, never entered)")  # fmt: skip
    balance_rows: list[list[Any]] = []
    flagged: list[bool] = []
    for lot in lots:
        for b in lot.get("balances", []):
            balance_rows.append([lot["lot_id"], b["unit"], *(_qty(b.get(c)) for c in BALANCE_COLUMNS),
                                 b.get("closes")])  # fmt: skip
            flagged.append(not b.get("closes", True) or Decimal(str(b.get("residual", 0))) > 0)
    pdf.rows(
        ["lot", "unit", *(c.replace("_", " ") for c in BALANCE_COLUMNS), "closes"],
        balance_rows,
        [44, 11, *([20] * len(BALANCE_COLUMNS)), 13],
        flagged,
    )

    pdf.heading("Data gaps")
    pdf.rows(
        ["lot", "gap"],
        [[g["lot_id"], g["message"]] for g in packet.get("gaps", [])],
        [60, 210],
    )
    return bytes(pdf.output())
