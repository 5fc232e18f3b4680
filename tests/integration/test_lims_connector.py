"""LIMS CSV connector end to end to the broker: bad rows parked, the rest delivered once."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from connectors.base import DLQ_SOURCE_POSITION, Connector
from connectors.checkpoints import CheckpointStore
from connectors.lims import LimsCsvSource
from connectors.publisher import KafkaPublisher
from lothub.settings import Settings
from schemas.model import QcSampleTaken
from schemas.serde import make_serde
from schemas.sites import SitesConfig
from tests.functional.test_lims import ROW1, ROW2, ROW3, alp_mapping, write
from tests.helpers import read_topic


def _connector(settings: Settings, checkpoints: CheckpointStore, folder: Path,
               demo_sites: SitesConfig) -> Connector[Any]:  # fmt: skip
    serde = make_serde()
    source = LimsCsvSource(name="lims-alp", folder=folder, mapping=alp_mapping(demo_sites),
                           encoding="cp1252", delimiter=";")  # fmt: skip
    return Connector(source, KafkaPublisher(settings.producer_config(), serde, settings.topics.raw),
                     KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
                     checkpoints, batch_size=2)  # fmt: skip


def test_csv_rows_flow_and_a_broken_row_is_parked(
    connector_wiring: tuple[Settings, CheckpointStore],
    tmp_path: Path,
    demo_sites: SitesConfig,
) -> None:
    settings, checkpoints = connector_wiring
    folder = tmp_path / "exports"
    folder.mkdir()
    write(folder, "2026-11-02.csv", [ROW1, "S-9;broken", ROW2])
    write(folder, "2026-11-03.csv", [ROW3])
    _connector(settings, checkpoints, folder, demo_sites).run(threading.Event(), until_idle=True)

    serde = make_serde()
    first = read_topic(settings, settings.topics.raw)
    events = [serde.decode(m.value(), topic="raw", partition=0, offset=0) for m in first]
    ids = [e.envelope.event_id for e in events]
    # ROW1: sample, result, disposition; ROW2: same sample again, result; ROW3: result, disposition
    assert len(ids) == 7
    assert len(set(ids)) == 6, "the sample event repeats with the same id, the hub stores it once"
    numbered = sorted(e.envelope.sequence for e in events if not isinstance(e, QcSampleTaken))
    assert numbered == [1, 2, 3, 4, 5], "dense; the broken row took no number"
    assert {e.envelope.sequence for e in events if isinstance(e, QcSampleTaken)} == {0}, (
        "not numbered: each row of the sample repeats it byte for byte"
    )
    (dead,) = read_topic(settings, settings.topics.connector_dlq)
    assert json.loads(dead.value())["text"] == "S-9;broken"
    assert json.loads(dict(dead.headers())[DLQ_SOURCE_POSITION]) == {
        "file": "2026-11-02.csv",
        "line": 3,
    }

    write(folder, "2026-11-04.csv", [ROW3.replace("S-2", "S-5")])  # tomorrow's export
    again = _connector(settings, checkpoints, folder, demo_sites)
    again.run(threading.Event(), until_idle=True)
    assert again.status.records_read == 1, "only the new file is read after a restart"
    later = [serde.decode(m.value(), topic="raw", partition=0, offset=0)
             for m in read_topic(settings, settings.topics.raw, besides=first)]  # fmt: skip
    assert sorted(e.envelope.sequence for e in later) == [6, 7], "numbering carries on"
    # what the "connector not succeeding" alert compares the last success with
    labels = {"site": "ALP", "system": again.source.system_kind.value, "connector": "lims-alp"}
    assert REGISTRY.get_sample_value("lothub_connector_poll_interval_seconds", labels) == (
        again.poll_interval_s
    )
