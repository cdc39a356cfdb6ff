"""Fuzzing: schemathesis generates requests for every operation in the API's own OpenAPI schema and sends
them, with a valid API key, to a real uvicorn serving ``create_app`` on a real Redis. No response may be a
server error (status >= 500) or fail to come, and JSON responses must match the schema.

Each operation is run with schema-valid (positive) and schema-violating (negative) data; the number of
examples per run is computed from the schema, so that at least TARGET_CASES requests are sent. Their ids
are generated, so most meet a 404; runs with ids that exist (every workflow, a finished task, an uploaded
asset and its signed link, media parameters set to that asset) follow, to reach the code behind the 404.
The seed is fixed, so CI replays the same cases every run: a red build means the code changed, not the
dice. Failures are collected, not raised at the first, so one run reports every server error it found,
each with a curl command that reproduces it.

No worker runs: accepted jobs stay queued. A stand-in worker heartbeat (a ready ComfyUI that has not yet
checked any workflow) is written so that /ready answers 200 and submissions are not refused as having no
worker: the API is fuzzed as it runs in production, not in its "no worker" state, whose 503 is by design.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import hypothesis
import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from comfyjobs.api.app import create_app
from comfyjobs.heartbeat import Heartbeat, WorkerBeat
from comfyjobs.jobs.record import utc_now
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO
from tests.media_files import png
from tests.support import served

TARGET_CASES = 1000  # requests with generated ids, over every operation and both generation modes
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
API_KEY = "k-fuzz"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# (connect, read) seconds. No route under test should take long: unknown ids are 404 at once, and so is a
# long poll (`?wait=`) on an unknown or finished task. A read that times out is a hang, and fails the test.
REQUEST_TIMEOUT_S = (5.0, 10.0)
# GET /tasks/{task_id}/events is a Server-Sent Events stream: for a task that has not finished it stays
# open until the task ends (here never: no worker), with heartbeats in between. Generated ids do not exist
# (404 at once) and the known task is finished (its stream ends after the final event); schemathesis also
# stops reading a stream once the timeout has passed in total. Should a stream still outlast the timeout,
# that is the stream doing its job, not a failure: on this route only, it counts as "stream-timeout".
STREAM_ROUTE = "GET /tasks/{task_id}/events"
STREAM_TIMEOUT_S = (5.0, 3.0)
FAKE_WORKER_ID = "fuzz-worker"

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]
SEED = 20_260_901  # fixed: CI replays the same cases every run, so a red build means the code changed
MAX_ROUNDS = 4
ANCHORED_EXAMPLES = 15  # per run with known ids, on top of TARGET_CASES


@dataclass
class FuzzApi:
    url: str
    settings: Settings


@dataclass
class Tally:
    """What the run saw: every call's status, the server errors and schema mismatches with reproducers."""

    statuses: Counter[str] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    per_mode: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_operation.values())


@pytest.fixture
def fuzz_api(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[FuzzApi]:
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "smoke-sd15.safetensors").write_bytes(b"stand-in")
    settings = Settings.load(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        manifest_dir=REPO / "manifests",
        workflow_dir=REPO / "workflows",
        queue_name=f"fuzz-{uuid.uuid4().hex[:8]}",  # a queue no worker consumes
        api_keys=SecretStr(f"fuzz:{API_KEY}"),
        max_queue_depth=1_000_000,  # every accepted job stays queued; the test is not about admission
        input_url_timeout_s=2.0,  # a generated http(s) URL in a media parameter: fetched, or refused, soon
    )
    started_at = utc_now()

    def stand_in_beat() -> WorkerBeat:
        return WorkerBeat(
            worker_id=FAKE_WORKER_ID, device="cpu", pid=1, comfyui_ready=True, comfyui_pid=2,
            comfyui_restarts=0, started_at=started_at, seen_at=utc_now(),
        )  # fmt: skip

    heartbeat = Heartbeat(redis_client, interval_s=30, make_beat=stand_in_beat)  # as a worker beats
    heartbeat.start()
    try:
        with served(create_app(settings)) as url:
            yield FuzzApi(url=url, settings=settings)
    finally:
        heartbeat.stop()
        redis_client.delete(settings.queue_name)


@dataclass
class Run:
    """One operation in one generation mode; optionally with some inputs set to things that exist."""

    operation: Operation
    mode: schemathesis.GenerationMode
    path_parameters: dict[str, str] | None = None
    query: dict[str, str] | None = None
    # Fields of a JSON object body to set, each to one of its values, on top of what is generated.
    body_fields: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        anchored = self.path_parameters is not None or self.query is not None or self.body_fields
        return f"{self.operation.label}{' [known ids]' if anchored else ''}"

    def strategy(self) -> st.SearchStrategy[Case]:
        cases = self.operation.as_strategy(
            generation_mode=self.mode, path_parameters=self.path_parameters, query=self.query
        )
        if not self.body_fields:
            return cases
        chosen = st.fixed_dictionaries(
            {name: st.sampled_from(values) for name, values in self.body_fields.items()}
        )
        return st.tuples(cases, chosen).map(_with_body_fields)


def _with_body_fields(pair: tuple[Case, dict[str, str]]) -> Case:
    case, fields = pair
    if isinstance(case.body, dict):
        case.body = {**case.body, **fields}
    return case


def _fuzz(
    run: Run, max_examples: int, seed: int, base_url: str, session: requests.Session, tally: Tally
) -> int:
    """Sends up to ``max_examples`` generated cases of ``run``; how many it sent."""
    is_stream = run.operation.label == STREAM_ROUTE
    mode = run.mode.value

    def one_case(case: Case) -> None:
        tally.per_operation[run.name] += 1
        tally.per_mode[mode] += 1
        try:
            response = case.call(
                base_url=base_url,
                session=session,
                headers=AUTH,
                timeout=STREAM_TIMEOUT_S if is_stream else REQUEST_TIMEOUT_S,
            )
        except requests.Timeout:
            if is_stream:
                tally.statuses["stream-timeout"] += 1
            else:
                tally.statuses["timeout"] += 1
                tally.hangs.append(f"{run.name} ({mode}): {case.as_curl_command(headers=AUTH)}")
            return
        tally.statuses[str(response.status_code)] += 1
        reproducer = f"{run.name} ({mode}) -> {response.status_code}: {case.as_curl_command(headers=AUTH)}"
        if response.status_code >= 500:
            tally.server_errors.append(f"{reproducer}\n    body: {response.text[:500]!r}")
            return
        try:
            case.validate_response(response, checks=[response_schema_conformance], headers=AUTH)
        except FailureGroup as group:
            reasons = "; ".join(failure.title for failure in group.exceptions)
            tally.nonconforming.append(f"{reproducer}\n    {reasons}: {response.text[:300]!r}")

    strategy = run.strategy()
    test = hypothesis.settings(
        max_examples=max_examples,
        database=None,  # nothing remembered between runs: with the fixed seed, the same cases every run
        deadline=None,
        phases=[Phase.generate],  # failures are collected, never raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )(hypothesis.given(case=strategy)(one_case))
    before = tally.total
    # Unsatisfiable: nothing of this mode to generate (e.g. no invalid value for a bare string): zero cases.
    with contextlib.suppress(Unsatisfiable):
        hypothesis.seed(seed)(test)()
    return tally.total - before


def _fuzz_to_target(
    runs: list[Run], target: int, base_url: str, session: requests.Session, tally: Tally
) -> None:
    """Runs every run, with examples enough that they send ``target`` cases in all.

    A run can send fewer than asked: a mode may have nothing to generate, a small space may run out (an
    operation without inputs has one request). What is still owed is spread over the runs still to go, and
    rounds with a new seed go on over the runs that sent all they were asked, until the target is met."""
    goal = tally.total + target
    for round_ in range(MAX_ROUNDS):
        before_round = tally.total
        productive = []
        for done, run in enumerate(runs):
            max_examples = max(math.ceil(max(goal - tally.total, 0) / (len(runs) - done)), 1)
            if _fuzz(run, max_examples, SEED + round_, base_url, session, tally) >= max_examples:
                productive.append(run)
        runs = productive
        if tally.total >= goal or tally.total == before_round or not runs:
            return


@dataclass
class KnownIds:
    workflow_ids: list[str]
    task_id: str  # a cancelled task: finished, so its event stream and long poll answer at once
    asset_id: str
    asset_link: tuple[str, dict[str, str]]  # the asset's signed download link: path, query
    media_values: list[str]  # what an image or mask parameter accepts: the asset's id, a data: URL
    media_parameters: dict[str, list[str]]  # workflow id -> its media parameters


def _make_known_ids(base_url: str, session: requests.Session, settings: Settings) -> KnownIds:
    workflows = session.get(f"{base_url}/workflows", headers=AUTH, timeout=30)
    assert workflows.status_code == 200, workflows.text
    submitted = session.post(f"{base_url}/workflows/tiny", json={}, headers=AUTH, timeout=30)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    cancelled = session.delete(f"{base_url}/tasks/{task_id}", headers=AUTH, timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    image = png()
    uploaded = session.post(
        f"{base_url}/assets", files={"file": ("red.png", image, "image/png")}, headers=AUTH, timeout=30
    )
    assert uploaded.status_code == 201, uploaded.text
    link = urlsplit(uploaded.json()["url"])
    return KnownIds(
        workflow_ids=[workflow["id"] for workflow in workflows.json()],
        task_id=task_id,
        asset_id=uploaded.json()["id"],
        asset_link=(link.path, dict(parse_qsl(link.query))),
        media_values=[uploaded.json()["id"], f"data:image/png;base64,{base64.b64encode(image).decode()}"],
        media_parameters={
            workflow.id: [param.name for param in workflow.media_parameters]
            for workflow in load_registry(settings.manifest_dir, settings.workflow_dir).workflows.values()
        },
    )


def _anchored_runs(operations: list[Operation], known: KnownIds) -> list[Run]:
    """Runs whose ids exist, so that cases get past the 404 that generated ids meet. Deletions last: what
    they delete (the asset) is then still there for the runs before them."""
    runs: list[Run] = []
    link_path, link_query = known.asset_link
    for op in operations:
        names = {param.name for param in op.path_parameters}
        if names == {"workflow_id"}:  # nothing else to vary: one case per workflow
            runs += [Run(op, MODES[0], {"workflow_id": wid}) for wid in known.workflow_ids]
        elif names == {"task_id"}:
            runs += [Run(op, mode, {"task_id": known.task_id}) for mode in MODES]
        elif names == {"asset_id"}:
            runs += [Run(op, mode, {"asset_id": known.asset_id}) for mode in MODES]
        elif op.method.upper() == "POST" and op.path == "/generate":
            runs += [Run(op, mode, body_fields={"workflow_id": known.workflow_ids}) for mode in MODES]
        elif op.method.upper() == "POST" and known.media_parameters.get(op.path.removeprefix("/workflows/")):
            media = known.media_parameters[op.path.removeprefix("/workflows/")]
            runs += [Run(op, mode, body_fields=dict.fromkeys(media, known.media_values)) for mode in MODES]
        elif names == {"tenant", "sha256"}:  # the signed link, with its signature and without
            tenant, sha256 = link_path.removeprefix("/inputs/").split("/")[:2]
            path = {"tenant": tenant, "sha256": sha256}
            runs += [Run(op, MODES[0], path, link_query)] + [Run(op, mode, path) for mode in MODES]
    return sorted(runs, key=lambda run: run.operation.method.upper() == "DELETE")


def _has_inputs(operation: Operation) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(operation.body)


@pytest.mark.timeout(600)
def test_no_generated_request_gets_a_server_error(fuzz_api: FuzzApi) -> None:
    started = time.monotonic()
    # No config file is read; reproducers keep the Authorization header (it is this test's own key).
    config = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})
    schema = schemathesis.openapi.from_url(f"{fuzz_api.url}/openapi.json", config=config, timeout=30)
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 20, [op.label for op in operations]  # the schema lists every route
    # Operations without inputs first: their one request leaves the rest of their share to the others.
    operations.sort(key=_has_inputs)
    tally = Tally()
    with requests.Session() as session:
        _fuzz_to_target(
            [Run(op, mode) for op in operations for mode in MODES], TARGET_CASES, fuzz_api.url, session, tally
        )
        generated_ids = tally.total
        for run in _anchored_runs(operations, _make_known_ids(fuzz_api.url, session, fuzz_api.settings)):
            _fuzz(run, ANCHORED_EXAMPLES, SEED, fuzz_api.url, session, tally)
    elapsed = time.monotonic() - started

    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items()))
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(tally.per_mode.items()))
    print(
        f"\nfuzz: {tally.total} cases ({generated_ids} with generated ids, {tally.total - generated_ids} with"
        f" known ids; {modes}) over {len(operations)} operations in {elapsed:.1f} s; status {{{statuses}}};"
        f" server errors: {len(tally.server_errors)}, hangs: {len(tally.hangs)},"
        f" schema mismatches: {len(tally.nonconforming)}"
    )
    problems = (
        [f"server error: {line}" for line in tally.server_errors]
        + [f"no answer within {REQUEST_TIMEOUT_S[1]} s: {line}" for line in tally.hangs]
        + [f"response does not match the schema: {line}" for line in tally.nonconforming]
    )
    assert not problems, "\n".join(problems)
    untested = {op.label for op in operations} - set(tally.per_operation)
    assert not untested, f"operations with no generated case: {sorted(untested)}"
    assert generated_ids >= TARGET_CASES, tally.per_operation
