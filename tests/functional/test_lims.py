"""LIMS sources: CSV exports in a folder and a JSON endpoint (mocked: a vendor LIMS can't run here)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connectors.base import Cursor
from connectors.lims import FilePosition, LimsCsvSource, LimsMapping, LimsRestSource, LimsRowMapper
from schemas.errors import ConfigurationError, EventValidationError, SourceUnavailableError
from schemas.model import LotStatusChanged, QcResultRecorded, QcSampleTaken
from schemas.sites import SitesConfig

GERMAN = {"sample_id": "Probe", "lot": "Charge", "test": "Prüfung", "result": "Ergebnis",
          "unit": "Einheit", "spec_max": "Max", "passed": "Bewertung", "tested_at": "Geprüft",
          "disposition": "Entscheid", "approver": "Freigabe", "sampled_at": "Entnommen"}  # fmt: skip
HEADER = (
    "Probe;Charge;Prüfung;Ergebnis;Einheit;Max;Bewertung;Geprüft;Entscheid;Freigabe;Entnommen\n"
)


def alp_mapping(demo_sites: SitesConfig, **kw: object) -> LimsMapping:
    return LimsMapping(system_instance="lims-alp", site_code="ALP", site=demo_sites.sites["ALP"],
                       fields=GERMAN, date_format="%d.%m.%Y %H:%M", decimal_separator=",",
                       pass_values=frozenset({"I.O."}), **kw)  # type: ignore[arg-type]  # fmt: skip


def write(folder: Path, name: str, rows: list[str], encoding: str = "cp1252") -> Path:
    path = folder / name
    path.write_bytes((HEADER + "".join(r + "\n" for r in rows)).encode(encoding))
    return path


ROW1 = "S-1;ALP-20261102-001;MOIST;3,4;%;4,0;i.O.;02.11.2026 15:20;F;qa.brunner;02.11.2026 11:00"
ROW2 = "S-1;ALP-20261102-001;FAT;1,1;%;1,5;i.O.;02.11.2026 15:25;;;02.11.2026 11:00"
ROW3 = "S-2;ALP-20261102-002;SALM;negativ;;;n.i.O.;03.11.2026 09:00;X;qa.brunner;"


def test_a_row_maps_to_result_sample_and_disposition(demo_sites: SitesConfig) -> None:
    mapper = LimsRowMapper(alp_mapping(demo_sites))
    events = mapper.events(dict(zip(HEADER.strip().split(";"), ROW1.split(";"), strict=True)))
    sample, result, status = events
    assert isinstance(sample, QcSampleTaken)
    assert isinstance(result, QcResultRecorded)
    assert isinstance(status, LotStatusChanged)
    assert result.numeric_result == Decimal("3.4")
    assert result.spec_max == Decimal("4.0")
    assert result.passed is True
    assert result.envelope.occurred_at.isoformat() == "2026-11-02T15:20:00+01:00"  # Europe/Zurich
    assert (status.status, status.actor) == ("F", "qa.brunner")


def test_every_row_of_a_sample_yields_the_same_sample_event(demo_sites: SitesConfig) -> None:
    mapper = LimsRowMapper(alp_mapping(demo_sites))
    first = mapper.events(dict(zip(HEADER.strip().split(";"), ROW1.split(";"), strict=True)))[0]
    second = mapper.events(dict(zip(HEADER.strip().split(";"), ROW2.split(";"), strict=True)))[0]
    assert first == second


def test_a_text_result_is_kept_and_fails(demo_sites: SitesConfig) -> None:
    mapper = LimsRowMapper(alp_mapping(demo_sites))
    events = mapper.events(dict(zip(HEADER.strip().split(";"), ROW3.split(";"), strict=True)))
    result = next(e for e in events if isinstance(e, QcResultRecorded))
    assert (result.result, result.numeric_result, result.passed) == ("negativ", None, False)


def test_bad_date_names_the_lims_column_and_format(demo_sites: SitesConfig) -> None:
    row = dict(zip(HEADER.strip().split(";"), ROW1.split(";"), strict=True)) | {
        "Geprüft": "2026-11-02"
    }
    with pytest.raises(EventValidationError, match=r"'Geprüft'.*%d\.%m\.%Y"):
        LimsRowMapper(alp_mapping(demo_sites)).events(row)


def test_csv_positions_span_files_and_resume_mid_file(
    tmp_path: Path, demo_sites: SitesConfig
) -> None:
    write(tmp_path, "2026-11-02.csv", [ROW1, ROW2])
    write(tmp_path, "2026-11-03.csv", [ROW3])
    source = LimsCsvSource(name="lims-alp", folder=tmp_path, mapping=alp_mapping(demo_sites),
                           encoding="cp1252", delimiter=";")  # fmt: skip
    first = source.read(None, 2)
    assert [r.position for r in first] == [
        FilePosition("2026-11-02.csv", 2),
        FilePosition("2026-11-02.csv", 3),
    ]
    rest = source.read(first[-1].position, 10)
    assert [r.position for r in rest] == [FilePosition("2026-11-03.csv", 2)]
    assert source.read(rest[-1].position, 10) == []
    with (tmp_path / "2026-11-03.csv").open("ab") as f:  # the LIMS appends to today's export
        f.write(b"S-3;ALP-20261102-003;MOIST;2,0;%;4,0;i.O.;03.11.2026 10:00;;;\nS-4;ALP-2026")
    grown = source.read(rest[-1].position, 10)
    assert [r.position.line for r in grown] == [3], "a half-written last line waits"
    assert len(source.to_events(grown[0])) == 1


def test_a_row_with_the_wrong_column_count_is_a_data_error(
    tmp_path: Path, demo_sites: SitesConfig
) -> None:
    write(tmp_path, "a.csv", ["S-9;ALP-20261102-001;MOIST"])
    source = LimsCsvSource(name="lims-alp", folder=tmp_path, mapping=alp_mapping(demo_sites),
                           encoding="cp1252", delimiter=";")  # fmt: skip
    (record,) = source.read(None, 10)
    with pytest.raises(EventValidationError, match="line 2: 3 values for 11 columns"):
        source.to_events(record)
    assert json.loads(record.raw)["text"] == "S-9;ALP-20261102-001;MOIST", (
        "raw line kept for the DLQ"
    )


def test_a_missing_folder_is_a_source_outage(tmp_path: Path, demo_sites: SitesConfig) -> None:
    source = LimsCsvSource(
        name="lims-alp", folder=tmp_path / "mount", mapping=alp_mapping(demo_sites)
    )
    with pytest.raises(SourceUnavailableError, match="not there"):
        source.read(None, 10)


RESULTS = [
    {"id": i, "updated_at": "2026-11-02T15:20:00" if i < 3 else "2026-11-02T16:00:00",
     "sample_id": f"S-{i}", "lot": "ALP-20261102-001", "test": "MOIST", "result": "3.1",
     "passed": "PASS", "tested_at": "2026-11-02T15:20:00+01:00"}
    for i in range(1, 6)
]  # fmt: skip


def lims_server(request: httpx.Request) -> httpx.Response:
    """A LIMS endpoint with the paging contract (rows 1-2 share a timestamp)."""
    after_at = request.url.params.get("updated_after")
    after_id = int(request.url.params.get("after_id", "0"))
    limit = int(request.url.params["limit"])
    rows = [r for r in RESULTS if after_at is None
            or (str(r["updated_at"]), int(r["id"])) > (after_at, after_id)]  # type: ignore[call-overload]  # fmt: skip
    return httpx.Response(200, json=rows[:limit])


def test_rest_source_pages_with_a_composite_cursor(demo_sites: SitesConfig) -> None:
    mapping = LimsMapping(
        system_instance="lims-rest", site_code="ALP", site=demo_sites.sites["ALP"]
    )
    source = LimsRestSource(name="lims-rest", url="http://lims.invalid/api/results", mapping=mapping,
                            transport=httpx.MockTransport(lims_server))  # fmt: skip
    seen: list[str] = []
    after: Cursor | None = None
    while page := source.read(after, 2):
        seen += [r.record_key for r in page]
        after = page[-1].position
    assert seen == ["1", "2", "3", "4", "5"]
    assert after == Cursor(updated_at=datetime(2026, 11, 2, 16, 0), pk="5")


@pytest.mark.parametrize(
    ("status", "error"), [(503, SourceUnavailableError), (401, ConfigurationError)]
)
def test_rest_source_errors_say_what_to_do(
    demo_sites: SitesConfig, status: int, error: type[Exception]
) -> None:
    mapping = LimsMapping(
        system_instance="lims-rest", site_code="ALP", site=demo_sites.sites["ALP"]
    )
    source = LimsRestSource(name="lims-rest", url="http://lims.invalid/api/results", mapping=mapping,
                            transport=httpx.MockTransport(lambda _r: httpx.Response(status)))  # fmt: skip
    with pytest.raises(error):
        source.read(None, 10)
