"""The orchestrator worker: consumes replies and fires deadlines. Run several for availability."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import (
    ErrorKind,
    Worker,
    classify_error,
    crash_point,
    driver_connection,
    eventstore_migrations,
    load_migrations,
)
from outbox import (
    Consumer,
    KafkaConnection,
    LogContext,
    Outbox,
    as_connection,
    log_context,
    outbox_migrations,
)
from saga import _repository as repo
from saga._clock import table_time
from saga._decision import DeadlineDue
from saga._metrics import worker_gauges
from saga._orchestrator import Orchestrator
from saga._protocol import command_id

log = logging.getLogger(__name__)


# A deadline whose decision fails is tried again later and later, then parked with its reason.
DEADLINE_MAX_FAILURES = 8
DEADLINE_BACKOFF_S = 1.0
DEADLINE_MAX_BACKOFF_S = 300.0
# How often the worker checks that it reaches Kafka (a metadata request), and how long it waits.
KAFKA_PROBE_S = 2.0
KAFKA_PROBE_TIMEOUT_S = 2.0
# How often the worker looks for sagas parked because a worker lacked a version it has.
TAKE_UP_INTERVAL_S = 5.0


class KafkaUnreachable(Exception):
    def __init__(self, bootstrap: str) -> None:
        super().__init__(f"no Kafka broker answers at {bootstrap}")


async def fire_due_deadlines(
    orchestrator: Orchestrator,
    limit: int = 100,
    *,
    max_failures: int = DEADLINE_MAX_FAILURES,
    backoff_s: float = DEADLINE_BACKOFF_S,
) -> int:
    """Act on deadlines that are due (timeouts, scheduled retries), each in a transaction of
    its own. Safe from many workers: a saga another worker is deciding on is skipped. A
    firing that fails backs off and is counted; after `DEADLINE_MAX_FAILURES` it is parked
    (`saga ls --stuck` shows it; `saga resume` takes it up again)."""
    engine = orchestrator.engine
    async with engine.connect() as conn:
        rows = await repo.due_deadlines(await driver_connection(conn), limit, table_time(orchestrator.clock))
        await conn.rollback()
    fired = 0
    for due in rows:
        with _about(due):
            try:
                fired += await _fire(orchestrator, due)
            except Exception as exc:
                if classify_error(exc) in (ErrorKind.CONTENTION, ErrorKind.CONNECTION_LOST):
                    raise  # not this deadline's fault: the loop waits and tries again
                await _count_failure(orchestrator, due, exc, max_failures, backoff_s)
    return fired


def _about(due: repo.DueDeadline) -> LogContext:
    return log_context(
        saga_id=due.saga_id,
        saga_type=due.saga_type or None,
        step=due.step,
        phase=due.phase,
        attempt=due.attempt,
    )


async def _fire(orchestrator: Orchestrator, due: repo.DueDeadline) -> int:
    async with orchestrator.engine.begin() as conn:
        driver = await driver_connection(conn)
        if not await repo.try_lock(driver, due.saga_id):
            return 0  # another worker (or a reply) is on this saga right now
        if not await repo.still_due(driver, due, table_time(orchestrator.clock)):
            return 0
        if due.kind == "reply" and await _unpublished(orchestrator, conn, due):
            return 0
        given = DeadlineDue(due.step, due.phase, due.attempt, due.kind)
        await orchestrator.on_deadline(conn, due.saga_id, given)
        # When the saga had moved on, nothing was persisted: drop the stale row here.
        await repo.drop_deadline(driver, due)
    crash_point("orchestrator.after_commit")
    return 1


async def _unpublished(orchestrator: Orchestrator, conn: AsyncConnection, due: repo.DueDeadline) -> bool:
    """A reply timeout measures the participant's silence, which starts when the command is
    published: while the command still waits in the outbox, the timeout starts over."""
    sent = command_id(due.saga_id, due.step, due.phase, due.attempt)
    if not any(m.message_id == sent for m in await Outbox.pending(conn, due.saga_id)):
        return False
    # The step's timeout is that of the saga's own version (the newest may lack the step).
    state = await orchestrator.load_raw(due.saga_id, conn)
    saga = orchestrator.versions.get(state.saga_type, state.saga_version)
    timeout = saga.step(due.step).timeout_s if saga and saga.has_step(due.step) else None
    if timeout is None:
        return False
    await repo.postpone_deadline(await driver_connection(conn), due, timeout, table_time(orchestrator.clock))
    log.info(
        "saga %s: %s/%s #%d not published yet; its timeout starts over",
        due.saga_id,
        due.step,
        due.phase,
        due.attempt,
    )
    return True


async def _count_failure(
    orchestrator: Orchestrator, due: repo.DueDeadline, exc: Exception, max_failures: int, backoff_s: float
) -> None:
    error = f"{type(exc).__name__}: {exc}"
    backoff = min(backoff_s * 2.0**due.failures, DEADLINE_MAX_BACKOFF_S)
    async with orchestrator.engine.begin() as conn:
        failures, parked = await repo.deadline_failed(
            await driver_connection(conn), due, error, backoff, max_failures, table_time(orchestrator.clock)
        )
    what = f"saga {due.saga_id}: deadline {due.kind} of {due.step}/{due.phase} #{due.attempt}"
    if parked:
        log.error(
            "%s failed %d times and is parked (saga ls --stuck; saga resume): %s", what, failures, error
        )
    elif failures <= 1:
        log.exception("%s failed; trying again in %.0fs", what, backoff)
    else:
        log.warning("%s failed again (%d times); trying again in %.0fs: %s", what, failures, backoff, error)


async def take_up_parked(orchestrator: Orchestrator, failed: set[str] | None = None, limit: int = 100) -> int:
    """Take up the sagas parked because a worker lacked their version, of the versions this
    orchestrator has (the messages they kept are decided on). Returns how many went on. A
    saga that cannot go on is logged once (its id goes in `failed`) and tried again next time."""
    versions = [(name, v) for name in orchestrator.versions.names() for v in orchestrator.versions.of(name)]
    async with orchestrator.engine.connect() as conn:
        saga_ids = await repo.parked_for_versions(await driver_connection(conn), versions, limit)
        await conn.rollback()
    failed = set() if failed is None else failed
    taken = 0
    for saga_id in saga_ids:
        try:
            if not await _take_up(orchestrator, saga_id):
                continue
        except Exception as exc:
            if classify_error(exc) in (ErrorKind.CONTENTION, ErrorKind.CONNECTION_LOST):
                raise  # not this saga's fault: the loop waits and tries again
            if saga_id not in failed:
                failed.add(saga_id)
                log.error(
                    "saga %s stays parked: taking it up failed: %s; it is tried again as long as it is parked "
                    "(saga show %s; saga migrate moves it to another version)",
                    saga_id,
                    " ".join(f"{type(exc).__name__}: {exc}".split())[:1000],  # a validation error's lines too
                    saga_id,
                )
            continue
        failed.discard(saga_id)
        taken += 1
        log.info("saga %s: taken up, its version is deployed here", saga_id)
    return taken


async def _take_up(orchestrator: Orchestrator, saga_id: str) -> bool:
    """Take up one saga if it is still parked for its version once we hold its lock: another
    worker, or a reply, may have taken it up since it was listed, and resuming a saga that runs
    would send its step again."""
    async with orchestrator.engine.begin() as conn:
        await repo.lock_one(await driver_connection(conn), saga_id)
        state = await orchestrator.load_raw(saga_id, conn)
        if state.parked is None or state.parked.saga_version is None:
            return False
        await orchestrator.resume(saga_id, "taken up by a worker that has its version", conn)
    return True


class OrchestratorWorker(Worker):
    """Replies drive sagas forward; due deadlines time steps out and run scheduled retries."""

    name = "orchestrator"

    def __init__(
        self,
        orchestrator: Orchestrator,
        kafka: str | KafkaConnection,
        *,
        deadline_interval_s: float = 0.5,
        group_id: str | None = None,
        metrics_interval_s: float | None = None,
        **consumer_options: Any,
    ) -> None:
        if deadline_interval_s <= 0:
            raise ValueError(f"deadline_interval_s must be > 0, got {deadline_interval_s}")
        super().__init__()
        self.orchestrator = orchestrator
        self.deadline_interval_s = deadline_interval_s
        self.bootstrap_servers = as_connection(kafka).bootstrap_servers
        # Set when /metrics is served: deadlines due and the feed lag need a query now and then.
        self._gauges = None if metrics_interval_s is None else worker_gauges(orchestrator, metrics_interval_s)
        # Checked before the worker joins its group: it needs every component's tables.
        consumer_options.setdefault(
            "schema", [*eventstore_migrations(), *outbox_migrations(), *load_migrations("saga", "saga")]
        )
        consumer_options.setdefault("broker_watch_s", None)  # `_run` probes Kafka itself
        self.replies = Consumer(
            orchestrator.database,
            kafka,
            group_id=group_id or orchestrator.topics.orchestrator_group(),
            topics=orchestrator.reply_topics(),
            registry=orchestrator.messages,
            handlers=dict.fromkeys(orchestrator.messages.models(), orchestrator.handle_reply),
            batch_handler=orchestrator.handle_replies,
            after_commit_point="orchestrator.after_commit",
            **consumer_options,
        )

    async def _open(self) -> None:
        await self.replies.start()
        if self._gauges is not None:
            await self._gauges.start()

    async def _close(self) -> None:
        if self._gauges is not None:
            await self._gauges.stop()
        await self.replies.stop()

    async def _run(self) -> None:
        """Fire due deadlines; while our side cannot reach Postgres or Kafka, fire none, and
        when it can again, first move the reply deadlines later by the outage."""
        outage = Outage("orchestrator: firing deadlines")
        kafka = Outage("orchestrator: Kafka")
        next_probe = next_take_up = 0.0
        not_taken: set[str] = set()
        last_reached = time.monotonic()
        while not self._stopping.is_set():
            if self.replies.ended():
                await self._replies_ended()
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + KAFKA_PROBE_S
                if not await self.replies.broker_reachable(KAFKA_PROBE_TIMEOUT_S):
                    # Kafka may have gone right after the last good probe: the outage counts from there.
                    gone = KafkaUnreachable(self.bootstrap_servers)
                    await self._backoff(kafka.failed(gone, KAFKA_PROBE_S, since=last_reached))
                    next_probe = 0.0
                    continue
                last_reached = time.monotonic()
            try:
                if outage.active or kafka.active:
                    # Before any deadline fires: our own outage is not the participants' silence.
                    await self._credit(max(outage.lasted(), kafka.lasted()))
                    outage.ended()
                    kafka.ended()
                if time.monotonic() >= next_take_up:
                    next_take_up = time.monotonic() + TAKE_UP_INTERVAL_S
                    await take_up_parked(self.orchestrator, not_taken)
                fired = await fire_due_deadlines(self.orchestrator)
            except Exception as exc:
                kind = classify_error(exc)
                if kind is ErrorKind.CONNECTION_LOST:
                    await self._backoff(outage.failed(exc, self.deadline_interval_s))
                    continue
                if kind is not ErrorKind.CONTENTION:
                    log.exception("orchestrator: firing deadlines failed; trying again")
                await self._backoff(self.deadline_interval_s)
                continue
            if not fired:
                await self._backoff(self.deadline_interval_s)

    async def _replies_ended(self) -> None:
        """The reply consumer's task died: the worker fails with its error (the process then
        exits and its supervisor starts a new one) rather than fire deadlines without replies."""
        try:
            await self.replies.wait()  # raises what ended it
        except asyncio.CancelledError as exc:  # its task was cancelled (this one is not: it runs)
            raise RuntimeError("orchestrator: the reply consumer was cancelled; the worker stops") from exc
        raise RuntimeError("orchestrator: the reply consumer ended by itself; the worker stops")

    async def _credit(self, lasted_s: float) -> None:
        """Move the pending reply deadlines later by the outage (raises while still down)."""
        async with self.orchestrator.engine.begin() as conn:
            moved, credited = await repo.credit_outage(await driver_connection(conn), lasted_s)
        log.warning("orchestrator: %d reply deadline(s) moved %.1fs later for the outage", moved, credited)


class Outage:
    """One log line when a loop loses Postgres, one a minute while it lasts, one when it ends;
    the wait between tries grows to `MAX_WAIT_S` meanwhile."""

    MAX_WAIT_S = 5.0
    REPEAT_S = 60.0

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.last_said = 0.0
        self.wait_s = 0.0

    def failed(self, exc: BaseException, base_wait_s: float, since: float | None = None) -> float:
        """Note a failed try (the outage began at `since`, default now); returns how long to
        wait before the next."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.last_said, self.wait_s = since or now, now, base_wait_s
            log.warning("%s: %s; waiting for it to come back", self.what, _short(exc))
        elif now - self.last_said >= self.REPEAT_S:
            self.last_said = now
            log.warning("%s: still failing after %.0fs: %s", self.what, now - self.since, _short(exc))
        self.wait_s = min(max(self.wait_s * 2, base_wait_s), self.MAX_WAIT_S)
        return self.wait_s

    @property
    def active(self) -> bool:
        return self.since is not None

    def lasted(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def ended(self) -> None:
        if self.since is not None:
            log.warning("%s: working again after %.1fs", self.what, self.lasted())
        self.since = None


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()
    return text[0][:300] if text else type(exc).__name__
