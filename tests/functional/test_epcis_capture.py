"""EPCIS 2.0 capture interface: ``POST /capture``, capture jobs and errors, with a fake sink.

Capture jobs and problem details are checked against the schemas of the GS1 REST binding
itself (``tests/data/epcis/REST-Bindings/openapi.yaml``).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

from connectors.epcis import EpcisMapping, map_document
from connectors.epcis_capture import CaptureJobs, create_capture_app
from schemas.errors import BrokerUnavailableError
from schemas.model import LotEventBase

DATA = Path(__file__).resolve().parent.parent / "data" / "epcis"
EXAMPLES = sorted((DATA / "JSON").rglob("*.jsonld"))
MAPPING = EpcisMapping(system_instance="epcis-test", default_site="EPC")
LD_JSON = {"content-type": "application/ld+json"}
LGTIN = "urn:epc:class:lgtin:7612345.012345.L-4711"


class Sink:
    """Appends each job's lot events; ``down`` simulates a broker outage."""

    def __init__(self) -> None:
        self.batches: list[list[LotEventBase]] = []
        self.down = False

    def __call__(self, events: list[LotEventBase]) -> None:
        if self.down:
            raise BrokerUnavailableError("broker did not acknowledge (test)")
        self.batches.append(events)

    def events(self) -> list[LotEventBase]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def client(sink: Sink) -> TestClient:
    return TestClient(create_capture_app(sink, MAPPING))


@cache
def binding() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((DATA / "REST-Bindings" / "openapi.yaml").read_text())
    # The binding's CaptureJob says oneOf(errors, errorFile), but neither branch requires its
    # property, so every object matches both and oneOf can never pass (the binding's own
    # example fails it). Checked here as anyOf; that `errors` is the one used is asserted.
    job = spec["components"]["schemas"]["CaptureJob"]["allOf"][1]
    job["anyOf"] = job.pop("oneOf")
    return spec


def schema_validator(name: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:epcis:openapi", DRAFT4.create_resource(binding())
    )
    return Draft7Validator(
        {"$ref": f"urn:epcis:openapi#/components/schemas/{name}"}, registry=registry
    )


def assert_capture_job(job: dict[str, Any]) -> None:
    assert list(schema_validator("CaptureJob").iter_errors(job)) == []
    # "A capture job document has at least the following properties" (the binding)
    assert {"captureID", "running", "success", "captureErrorBehaviour", "errors"} <= set(job)
    assert "errorFile" not in job
    for error in job["errors"]:
        assert list(schema_validator("RFC7807ProblemResponseBody").iter_errors(error)) == []


def assert_problem(response: Any, status: int, exception: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert list(schema_validator("RFC7807ProblemResponseBody").iter_errors(body)) == []
    assert (body["type"], body["status"]) == (f"epcisException:{exception}", status)
    return body


def capture(client: TestClient, body: bytes, **headers: str) -> tuple[Any, dict[str, Any]]:
    """POST /capture, then the job it created (the background task has run by then)."""
    response = client.post("/capture", content=body, headers={**LD_JSON, **headers})
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert re.fullmatch(r"/capture/id[0-9a-f]{32}", location)
    assert response.json()["captureID"] == location.rsplit("/", 1)[1]
    job = client.get(location)
    assert job.status_code == 200
    assert_capture_job(job.json())
    return response, job.json()


def document(*events: dict[str, Any]) -> bytes:
    doc = {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-02T08:00:00Z",
        "epcisBody": {"eventList": list(events)},
    }
    return json.dumps(doc).encode()


def receipt(event_id: str, **quantity: Any) -> dict[str, Any]:
    element = {"epcClass": LGTIN, **quantity}
    return {
        "type": "ObjectEvent",
        "eventID": event_id,
        "eventTime": "2026-11-02T07:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "bizStep": "receiving",
        "quantityList": [element],
    }


GOOD = receipt("urn:uuid:good", quantity=12.5, uom="KGM")
NO_QUANTITY = receipt("urn:uuid:no-quantity")  # valid EPCIS; a receipt without an amount


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(DATA / "JSON")))
def test_every_gs1_example_is_captured(path: Path, client: TestClient, sink: Sink) -> None:
    response, job = capture(client, path.read_bytes())
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0"
    expected = map_document(json.loads(path.read_text(encoding="utf-8")), MAPPING)
    assert sink.events() == expected
    assert job["running"] is False
    assert job["success"] is True
    assert job["errors"] == []
    assert job["captureErrorBehaviour"] == "rollback"
    assert job["lotEventCount"] == len(expected)
    assert job["finishedAt"] >= job["createdAt"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/ld+json", "application/ld+json; charset=utf-8"],
)
def test_json_and_json_ld_are_accepted(content_type: str, client: TestClient, sink: Sink) -> None:
    _, job = capture(client, document(GOOD), **{"content-type": content_type})
    assert job["success"] is True
    (received,) = sink.events()
    assert str(received.quantity.value) == "12.500000"  # exact decimal, no float on the way


def test_rollback_rejects_every_event_when_one_cannot_be_mapped(
    client: TestClient, sink: Sink
) -> None:
    _, job = capture(client, document(GOOD, NO_QUANTITY))  # rollback is the default
    assert job["captureErrorBehaviour"] == "rollback"
    assert (job["running"], job["success"], job["lotEventCount"]) == (False, False, 0)
    assert sink.batches == []
    (error,) = job["errors"]
    assert error["type"] == "epcisException:ValidationException"
    assert error["instance"].endswith("#/epcisBody/eventList/1")
    assert error["eventID"] == "urn:uuid:no-quantity"
    assert "states no quantity" in error["detail"]


def test_proceed_captures_every_event_that_maps(client: TestClient, sink: Sink) -> None:
    body = document(NO_QUANTITY, GOOD)
    _, job = capture(client, body, **{"GS1-Capture-Error-Behaviour": "proceed"})
    assert job["captureErrorBehaviour"] == "proceed"
    assert (job["running"], job["success"], job["lotEventCount"]) == (False, False, 1)
    (received,) = sink.events()
    assert received.envelope.correlation_id == "urn:uuid:good"
    (error,) = job["errors"]
    assert error["instance"].endswith("#/epcisBody/eventList/0")


def test_unmapped_data_is_reported_with_the_job(client: TestClient) -> None:
    packing = dict(GOOD, eventID="urn:uuid:packing", bizStep="packing")
    _, job = capture(client, document(packing))
    assert job["success"] is True
    assert job["lotEventCount"] == 0
    (note,) = job["unmapped"]
    assert (note["lot"], note["quantity"], note["uom"]) == ("L-4711", "12.5", "KGM")
    assert note["pointer"] == "/epcisBody/eventList/0/quantityList/0"


def test_an_unknown_error_behaviour_is_refused(client: TestClient, sink: Sink) -> None:
    response = client.post(
        "/capture",
        content=document(GOOD),
        headers={**LD_JSON, "GS1-Capture-Error-Behaviour": "all"},
    )
    assert_problem(response, 400, "ValidationException")
    assert client.get("/capture").json() == []
    assert sink.batches == []


def test_invalid_json_is_refused_without_a_job(client: TestClient, sink: Sink) -> None:
    response = client.post("/capture", content=b'{"type": "EPCISDocument",', headers=LD_JSON)
    body = assert_problem(response, 400, "ValidationException")
    assert body["errors"][0]["pointer"] == "/"
    assert "line 1" in body["errors"][0]["message"]
    assert client.get("/capture").json() == []
    assert sink.batches == []


def test_a_schema_invalid_document_is_refused_with_json_pointers(
    client: TestClient, sink: Sink
) -> None:
    doc = json.loads((DATA / "JSON" / "Example_9.6.2-ObjectEvent.jsonld").read_text())
    broken = copy.deepcopy(doc)
    broken["epcisBody"]["eventList"][0]["eventTime"] = "2013-06-08 14:58"
    broken["epcisBody"]["eventList"][0]["quantityList"][0]["uom"] = "kilogram"
    response = client.post("/capture", content=json.dumps(broken).encode(), headers=LD_JSON)
    body = assert_problem(response, 400, "ValidationException")
    pointers = {e["pointer"] for e in body["errors"]}
    assert "/epcisBody/eventList/0/eventTime" in pointers
    assert "/epcisBody/eventList/0/quantityList/0/uom" in pointers
    assert sink.batches == []


def test_other_media_types_are_refused(client: TestClient) -> None:
    response = client.post(
        "/capture", content=document(GOOD), headers={"content-type": "application/xml"}
    )
    assert_problem(response, 415, "UnsupportedMediaTypeException")


def test_capture_limits_are_enforced_and_announced(sink: Sink) -> None:
    small = TestClient(create_capture_app(sink, MAPPING, max_bytes=2048, max_events=1))
    options = small.options("/capture")
    assert options.status_code == 204
    assert options.headers["GS1-EPCIS-Capture-Limit"] == "1"
    assert options.headers["GS1-EPCIS-Capture-File-Size-Limit"] == "2048"
    assert options.headers["GS1-Capture-Error-Behaviour"] == "all"
    assert set(options.headers["Allow"].replace(" ", "").split(",")) == {"OPTIONS", "POST", "GET"}
    big = (DATA / "JSON" / "PersistentDisposition-example.jsonld").read_bytes()
    response = small.post("/capture", content=big, headers=LD_JSON)
    assert_problem(response, 413, "CaptureLimitExceededException")
    assert response.headers["GS1-EPCIS-Capture-File-Size-Limit"] == "2048"
    two = document(GOOD, dict(GOOD, eventID="urn:uuid:other"))
    response = small.post("/capture", content=two, headers=LD_JSON)
    assert_problem(response, 413, "CaptureLimitExceededException")
    assert response.headers["GS1-EPCIS-Capture-Limit"] == "1"
    assert sink.batches == []


def test_a_failing_sink_fails_the_job_and_a_resend_gives_the_same_events(
    client: TestClient, sink: Sink
) -> None:
    sink.down = True
    _, failed = capture(client, document(GOOD))
    assert (failed["success"], failed["lotEventCount"]) == (False, 0)
    (error,) = failed["errors"]
    assert error["type"] == "epcisException:ImplementationException"
    assert failed["unmapped"] == []
    sink.down = False
    _, resent = capture(client, document(GOOD))
    assert resent["success"] is True
    again = map_document(json.loads(document(GOOD)), MAPPING)
    assert sink.events() == again


def test_an_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/capture/id0000")
    body = assert_problem(response, 404, "NoSuchResourceException")
    assert body["instance"] == "/capture/id0000"


def test_jobs_are_listed_oldest_first_in_pages(client: TestClient) -> None:
    ids = [capture(client, document(GOOD))[1]["captureID"] for _ in range(3)]
    first = client.get("/capture", params={"perPage": 2})
    assert first.status_code == 200
    assert [j["captureID"] for j in first.json()] == ids[:2]
    for job in first.json():
        assert_capture_job(job)
    link = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["link"])
    assert link is not None
    second = client.get(link[1])
    assert [j["captureID"] for j in second.json()] == ids[2:]
    assert "link" not in second.headers
    assert client.get("/capture", params={"perPage": 0}).status_code == 400
    assert_problem(
        client.get("/capture", params={"nextPageToken": "x"}), 400, "ValidationException"
    )


def test_only_the_last_jobs_are_kept(sink: Sink) -> None:
    client = TestClient(create_capture_app(sink, MAPPING, max_jobs=2))
    ids = [capture(client, document(GOOD))[1]["captureID"] for _ in range(3)]
    assert client.get(f"/capture/{ids[0]}").status_code == 404
    assert [j["captureID"] for j in client.get("/capture").json()] == ids[1:]


def test_a_job_is_running_until_it_finishes() -> None:
    jobs = CaptureJobs(limit=1)
    running = jobs.create("proceed", 3)
    snapshot = jobs.get(running.capture_id)
    assert snapshot is not None
    assert (snapshot["running"], snapshot["success"]) == (True, True)
    assert "finishedAt" not in snapshot
    assert_capture_job(snapshot)
    newer = jobs.create("rollback", 1)  # a full store drops the oldest, even if running
    assert jobs.get(running.capture_id) is None
    jobs.finish(newer, errors=[], lot_events=1, unmapped=[])
    done = jobs.get(newer.capture_id)
    assert done is not None
    assert (done["running"], done["success"], done["lotEventCount"]) == (False, True, 1)


class Parked:
    """Keeps dead letters; ``down`` simulates an unavailable dead-letter topic."""

    def __init__(self) -> None:
        self.letters: list[tuple[bytes, str]] = []
        self.down = False

    def __call__(self, data: bytes, reason: str) -> None:
        if self.down:
            raise BrokerUnavailableError("dead-letter topic unavailable (test)")
        self.letters.append((data, reason))


def test_invalid_and_unmappable_documents_are_parked_with_the_reason(sink: Sink) -> None:
    parked = Parked()
    client = TestClient(create_capture_app(sink, MAPPING, dead_letter=parked))
    bad = b'{"type": "EPCISDocument",'
    assert client.post("/capture", content=bad, headers=LD_JSON).status_code == 400
    (letter,) = parked.letters
    assert letter[0] == bad, "the dead letter keeps the bytes as sent"
    assert letter[1].startswith("invalid-epcis: not valid JSON")

    body = document(GOOD, NO_QUANTITY)
    _, job = capture(client, body, **{"GS1-Capture-Error-Behaviour": "proceed"})
    assert job["lotEventCount"] == 1, "proceed still hands on what maps"
    data, reason = parked.letters[1]
    assert data == body
    assert reason.startswith("unmappable-epcis: capture job")
    assert "/epcisBody/eventList/1" in reason
    assert "1 event(s)" in reason

    _, clean = capture(client, document(GOOD))
    assert clean["success"] is True
    assert len(parked.letters) == 2, "a document that maps entirely is not parked"


def test_an_invalid_document_is_a_503_when_it_cannot_be_parked(sink: Sink) -> None:
    parked = Parked()
    parked.down = True
    client = TestClient(create_capture_app(sink, MAPPING, dead_letter=parked))
    response = client.post("/capture", content=b"[", headers=LD_JSON)
    assert_problem(response, 503, "ImplementationException")
    assert response.headers["retry-after"] == "30"
