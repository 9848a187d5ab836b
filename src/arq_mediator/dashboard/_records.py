"""Reading what the engine recorded of a job (its history hash, log lines, envelope) into the model's rows.

Everything read here was written to Redis, where any client may write anything: nothing here raises on
a value it cannot read; it is left out instead.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .._envelope import JobEnvelope, ResultRecord
from .._jobs import envelope_of
from .._queue_introspection import WorkerState
from ._model import JobDetail, JobState, JobStep, JobSummary, LogLine, WorkerSummary

# The fields of a job's history hash a list row needs.
SUMMARY_FIELDS = ("type", "queue", "state", "tries", "enqueued", "started", "finished", "worker")
_STATES = {state.value: state for state in JobState}


def text(value: Any) -> str:
    """Return a Redis reply as text (bytes decoded, lossy)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def moment(value: Any) -> datetime | None:
    """Return a time in ms since the epoch as an aware datetime; ``None`` when it is not one."""
    try:
        milliseconds = int(text(value))
    except ValueError:
        return None
    if milliseconds <= 0:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


def number(value: Any) -> int:
    """Return a Redis reply as an int; 0 when it is not one."""
    try:
        return int(text(value))
    except ValueError:
        return 0


def state_of(value: Any, fallback: JobState) -> JobState:
    """Return the state a history names, or *fallback* when it names none the model knows."""
    return _STATES.get(text(value), fallback)


def summary_of(
    job_id: str, facts: list[Any], state: JobState, envelope: JobEnvelope | None = None
) -> JobSummary:
    """Return the list row of a job in *state* from the `SUMMARY_FIELDS` of its history and its envelope."""
    kind, queue, _, tries, enqueued, started, finished, worker = facts
    enqueued_at = moment(enqueued)
    if envelope is not None:
        kind = kind or envelope.type
        queue = queue or envelope.queue
        enqueued_at = enqueued_at or moment(envelope.enqueued_at)
    return JobSummary(
        id=job_id,
        request_type=text(kind),
        queue=text(queue),
        state=state,
        tries=number(tries),
        enqueued_at=enqueued_at,
        started_at=moment(started),
        finished_at=moment(finished),
        worker=text(worker) or None,
    )


# What starts the line of a finished job's envelope among its steps.
ENVELOPE_MARK = "\x1e"


def kept_envelope_of(raw_steps: list[Any]) -> JobEnvelope | None:
    """Return the envelope a finished job's steps kept (the last one, for a job that ran again)."""
    lines = [line for line in map(text, raw_steps) if line.startswith(ENVELOPE_MARK)]
    return envelope_of(lines[-1][1:].encode()) if lines else None


def with_enqueue_step(raw_steps: list[Any], facts: dict[str, Any], envelope: JobEnvelope | None) -> list[str]:
    """Return a job's step lines with its enqueue's first: from its hash (or envelope) unless a line has it.

    The enqueue writes no step line (a steps list per queued job cost a third of its memory), and no hash
    for a job due now: until its claim dates its enqueue (Redis's clock), its envelope's time (the
    producer's) is shown. A history written before has the line first (its list keeps its first line when
    trimmed); a job whose hash was written anew at its finish has no enqueue time and no line.
    """
    lines = list(map(text, raw_steps))
    if lines and lines[0].split("\t", 2)[1:2] in (["enqueued"], ["scheduled"]):
        return lines
    enqueued, due = text(facts.get("enqueued")), text(facts.get("due"))
    if not enqueued and envelope is not None and not facts:
        enqueued = str(envelope.enqueued_at)
        due = str(envelope.due_at) if envelope.due_at and envelope.due_at > envelope.enqueued_at else ""
    if not enqueued:
        return lines
    return [f"{enqueued}\t{'scheduled' if due else 'enqueued'}\t\t\t{due}", *lines]


def steps_of(raw_steps: list[Any]) -> list[JobStep]:
    """Return the steps of a job's history (its step lines), oldest first."""
    steps = []
    for line in map(text, raw_steps):
        if line.startswith(ENVELOPE_MARK):
            continue
        fields = line.split("\t", 4)
        if len(fields) < 5 or (at := moment(fields[0])) is None:
            continue
        _, state, try_number, worker, detail = fields
        if state == "retrying":  # its detail: when the retry is due, then what failed
            due, _, error = detail.partition("\t")
            due_at = moment(due)
            detail = f"retry at {due_at.isoformat()}" if due_at else ""
            detail += f" after {error}" if error else ""
        elif state == "scheduled":
            due_at = moment(detail)
            detail = f"due at {due_at.isoformat()}" if due_at else ""
        steps.append(
            JobStep(
                at=at,
                state=state,
                try_number=int(try_number) if try_number.isdigit() else None,
                worker=worker or None,
                detail=detail or None,
            )
        )
    return steps


def logs_of(raw_lines: list[Any]) -> list[LogLine]:
    """Return the log lines a job's history kept, oldest first."""
    lines = []
    for raw in raw_lines:
        try:
            line = json.loads(raw)
            lines.append(
                LogLine(
                    at=datetime.fromtimestamp(int(line["at"]) / 1000, UTC),
                    try_number=int(line["try"]),
                    level=str(line["level"]),
                    message=str(line["message"]),
                )
            )
        except (ValueError, TypeError, KeyError):
            continue
    return lines


def wait_and_run(steps: list[JobStep], summary: JobSummary) -> tuple[timedelta | None, timedelta | None]:
    """Return how long the job waited for its first start, and how long its last try ran."""
    started = [step.at for step in steps if step.state == "started"]
    first_start = started[0] if started else summary.started_at
    wait = first_start - summary.enqueued_at if first_start and summary.enqueued_at else None
    last_start = summary.started_at or (started[-1] if started else None)
    run = summary.finished_at - last_start if summary.finished_at and last_start else None
    if wait is not None and wait < timedelta(0):  # an enqueued time from another clock than the server's
        wait = None
    if run is not None and run < timedelta(0):
        run = None
    return wait, run


def trace_id_of(envelope: JobEnvelope | None) -> str | None:
    """Return the trace id of the W3C ``traceparent`` the job was enqueued with."""
    if envelope is None:
        return None
    parts = envelope.trace.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def progress_of(raw: Any) -> float | None:
    """Return the progress a job reported, or ``None``."""
    try:
        value = float(text(raw))
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


# How much of an unreadable job body a job page shows.
RAW_LIMIT = 16 * 1024


def record_of(raw: bytes | None) -> ResultRecord | None:
    """Return the result record *raw* holds, or ``None``."""
    if raw is None:
        return None
    try:
        return ResultRecord.model_validate_json(raw)
    except ValidationError:
        return None


def with_record(summary: JobSummary, record: ResultRecord) -> JobSummary:
    """Fill a finished job's row from its result record where its history has nothing (history off)."""
    return dataclasses.replace(
        summary,
        request_type=summary.request_type or record.type,
        queue=summary.queue or record.queue,
        tries=summary.tries or record.try_number,
        started_at=summary.started_at or moment(record.started_at),
        finished_at=summary.finished_at or moment(record.finished_at),
        worker=summary.worker or record.worker or None,
    )


def tick_job_id(name: str, tick: bytes | None) -> str | None:
    """Return the job id of the last tick of recurring job *name* (ids follow the tick, in seconds)."""
    try:
        return f"recurring:{name}:{int(tick or b'') // 1000}"
    except ValueError:
        return None


def detail_of(
    job_id: str,
    state: JobState,
    facts: dict[str, Any],
    body: bytes | None,
    envelope: JobEnvelope | None,
    record: ResultRecord | None,
    raw_steps: list[Any],
    log_lines: list[Any],
) -> JobDetail:
    """Return a job's page from what Redis holds of it: history facts, body, result record, steps, logs."""
    summary = summary_of(job_id, [facts.get(name) for name in SUMMARY_FIELDS], state, envelope)
    if record is not None:
        summary = with_record(summary, record)
    steps = steps_of(with_enqueue_step(raw_steps, facts, envelope))
    if state is JobState.RUNNING and summary.started_at is not None:  # a try's start is written at its end
        steps.append(JobStep(summary.started_at, "started", summary.tries or None, summary.worker))
    wait, run = wait_and_run(steps, summary)
    error = record.error if record is not None else None
    parent = text(facts.get("parent")) or (envelope.meta.get("parent", "") if envelope else "")
    raw = record.raw if record is not None and record.raw else None
    if raw is None and body is not None and envelope is None:
        raw = text(body)[:RAW_LIMIT]
    return JobDetail(
        summary=summary,
        payload=envelope.payload if envelope is not None else None,
        result=record.value if record is not None and record.ok else None,
        error_type=error.type if error else None,
        error_message=error.message if error else None,
        traceback=(error.traceback or None) if error else None,
        steps=steps,
        wait=wait,
        run=run,
        trace_id=trace_id_of(envelope),
        parent_id=parent or None,
        progress=progress_of(facts.get("progress")),
        logs=logs_of(log_lines),
        raw=raw,
    )


def worker_summary_of(worker: WorkerState, now_ms: int) -> WorkerSummary:
    """Return the workers page's row of a live worker, as its last heartbeat described it."""
    return WorkerSummary(
        name=worker.name,
        instance=worker.instance,
        host=worker.host,
        pid=worker.pid,
        queues=list(worker.queues),
        max_jobs=worker.max_jobs,
        running=worker.running,
        processed=worker.succeeded + worker.failed,
        failed=worker.failed,
        heartbeat_age=timedelta(milliseconds=max(now_ms - worker.last_seen, 0)),
    )
