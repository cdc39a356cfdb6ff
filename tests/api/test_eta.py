"""Estimates from recent run times, the live workers, the place in line and the sampler's pace."""

from __future__ import annotations

from datetime import timedelta

from comfyjobs.api.eta import Eta, EtaModel
from comfyjobs.jobs.record import JobRecord, JobStatus, Progress, utc_now
from comfyjobs.jobs.store import QueuePlace

NOW = utc_now()


def test_a_waiting_job_starts_after_the_jobs_ahead_shared_among_the_workers() -> None:
    model = EtaModel({"*": 10.0, "txt2img": 30.0}, workers=2)
    record = JobRecord(task_id="t", workflow_id="txt2img")

    eta = model.estimate(record, QueuePlace(position=4, waiting=9), NOW)

    assert eta.start_at == NOW + timedelta(seconds=20)  # 4 ahead-or-next over 2 workers, 10 s each
    assert eta.finish_at == NOW + timedelta(seconds=50)  # then its own workflow's 30 s


def test_a_running_job_finishes_at_its_samplers_pace() -> None:
    model = EtaModel({"txt2img": 30.0}, workers=1)
    started = NOW - timedelta(seconds=8)
    sampling = JobRecord(task_id="t", workflow_id="txt2img", status=JobStatus.PROGRESS, started_at=started,
                         progress=Progress(value=4, max=20))  # fmt: skip
    loading = sampling.model_copy(update={"progress": Progress()})

    assert model.estimate(sampling, None, NOW).finish_at == NOW + timedelta(seconds=32)  # 8 s per 4 steps
    assert model.estimate(loading, None, NOW).finish_at == started + timedelta(seconds=30)


def test_no_history_no_estimate() -> None:
    record = JobRecord(task_id="t", workflow_id="txt2img")
    assert EtaModel({}, workers=1).estimate(record, QueuePlace(position=1, waiting=1), NOW) == Eta()
    done = record.model_copy(update={"status": JobStatus.SUCCESS})
    assert EtaModel({"*": 1.0}, workers=1).estimate(done, None, NOW) == Eta()
