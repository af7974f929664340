"""`saga topics plan` and `saga topics apply`: the app's topics on the broker.

    saga topics plan --app myapp.app:app     # what apply would change; changes nothing
    saga topics apply --app myapp.app:app    # make those changes (safe to run again)

Partitions, replication factor and min.insync.replicas come from SAGA_TOPIC_PARTITIONS,
SAGA_TOPIC_REPLICATION_FACTOR and SAGA_TOPIC_MIN_INSYNC_REPLICAS.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import click

from outbox import ChangeOutcome, OutboxError, TopicPlan
from saga._cli_base import Context, cli, pass_ctx, run
from saga._settings import Settings
from saga._topics_plan import TopicNumbers, apply_for, plan_for

T = TypeVar("T")


@cli.group()
def topics() -> None:
    """The app's Kafka topics: commands, replies and dead-letter topics."""


def _numbers(settings: Settings) -> TopicNumbers:
    return TopicNumbers(
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        min_insync_replicas=settings.topic_min_insync_replicas,
    )


def _run_kafka(work: Awaitable[T]) -> T:
    try:
        return run(work)
    except OutboxError as exc:  # Kafka away, a refused login, numbers the cluster cannot take
        raise click.ClickException(str(exc)) from None


@topics.command("plan")
@pass_ctx
def plan(ctx: Context) -> None:
    """List what `saga topics apply` would change: topics to create, partitions to add,
    min.insync.replicas to set. Changes nothing; exit code 0 whatever it finds."""
    settings = ctx.settings()
    app = ctx.app(settings)
    result = _run_kafka(plan_for(app, settings.kafka(), _numbers(settings)))
    ctx.emit(result.as_json(), lambda: _render_plan(result))


@topics.command("apply")
@pass_ctx
def apply(ctx: Context) -> None:
    """Make the changes `saga topics plan` lists. Never deletes a topic or removes partitions.
    Exit code 1, with the broker's reason, when a change fails."""
    settings = ctx.settings()
    app = ctx.app(settings)
    result, outcomes = _run_kafka(apply_for(app, settings.kafka(), _numbers(settings)))
    failed = [o for o in outcomes if o.error is not None]
    data = {**result.as_json(), "changes": [o.as_json() for o in outcomes], "failed": len(failed)}
    ctx.emit(data, lambda: _render_applied(result, outcomes))
    if failed:
        reasons = "; ".join(f"{o.change.topic}: {o.error}" for o in failed)
        raise click.ClickException(f"{len(failed)} of {len(outcomes)} change(s) failed: {reasons}")


def _render_plan(result: TopicPlan) -> None:
    for change in result.changes:
        click.echo(change.describe())
    _render_notes(result)
    n = len(result.changes)
    click.echo(f"{n} change(s)" if n else f"nothing to do ({len(result.unchanged)} topic(s) as wanted)")


def _render_applied(result: TopicPlan, outcomes: list[ChangeOutcome]) -> None:
    for outcome in outcomes:
        click.echo(outcome.describe())
    _render_notes(result)
    made = sum(1 for o in outcomes if o.error is None and not o.already)
    if not outcomes:
        click.echo(f"nothing to do ({len(result.unchanged)} topic(s) as wanted)")
    else:
        click.echo(f"{made} change(s) made")


def _render_notes(result: TopicPlan) -> None:
    for note in result.notes:
        click.echo(f"note: {note}")
