"""`saga dlq ...`: list the dead-letter topics, read their records, send them back.

Reading commits nothing and joins no consumer group (outbox.DeadLetterReader). A redriven
record is the original message with the same message id: the consumer's inbox applies it at
most once, so redriving twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from outbox import DeadLetter, DeadLetterError, DeadLetterReader, DeadLetterTopic, Redrive, parse_ref
from saga._cli_base import Context, cli, pass_ctx, run
from saga._protocol import DEAD_LETTER_SUFFIX
from saga._settings import Settings

T = TypeVar("T")
VALUE_SHOWN = 300  # characters of a record's value in the human output


def _with_reader(settings: Settings, work: Callable[[DeadLetterReader], Awaitable[T]]) -> T:
    # The reader turns Kafka's failures into one DeadLetterError; the client's own log lines
    # would repeat it on stderr (they still reach a handler the user configured).
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

    async def go() -> T:
        async with DeadLetterReader(settings.kafka(), suffix=DEAD_LETTER_SUFFIX) as reader:
            return await work(reader)

    try:
        return run(go())
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None


@cli.group()
def dlq() -> None:
    """Dead letters: list the dead-letter topics, show their records, redrive them."""


@dlq.command("ls")
@pass_ctx
def ls(ctx: Context) -> None:
    """Dead-letter topics holding records: how many, and their offsets per partition."""
    settings = ctx.settings()
    prefix = ctx.topic_prefix(settings)
    topics = _with_reader(settings, lambda reader: reader.topics(prefix))
    held = [t for t in topics if t.records]

    def render() -> None:
        if not held:
            click.echo(
                f"no dead letters under the prefix {prefix!r} ({len(topics)} dead-letter topic(s), all empty)"
            )
            return
        width = max(len(t.topic) for t in held)
        click.echo(f"{'topic'.ljust(width)}  {'records':>7}  partition[oldest..newest]")
        for t in held:
            click.echo(f"{t.topic.ljust(width)}  {t.records:>7}  {_offsets(t)}")

    ctx.emit([_topic_dict(t) for t in held], render)


def _offsets(topic: DeadLetterTopic) -> str:
    return "  ".join(f"[{p.partition}] {p.first}..{p.end - 1}" for p in topic.partitions if p.records)


def _topic_dict(topic: DeadLetterTopic) -> dict[str, Any]:
    return {
        "topic": topic.topic,
        "records": topic.records,
        "partitions": [
            {"partition": p.partition, "records": p.records, "oldest": p.first, "newest": p.end - 1}
            for p in topic.partitions
            if p.records
        ],
    }


@dlq.command()
@click.argument("target")
@click.argument("partition_arg", metavar="[PARTITION", required=False, type=click.IntRange(min=0))
@click.argument("offset_arg", metavar="[OFFSET]]", required=False, type=click.IntRange(min=0))
@click.option("--partition", type=click.IntRange(min=0), default=None, help="Only this partition")
@click.option(
    "--offset", type=click.IntRange(min=0), default=None, help="From this offset (needs --partition)"
)
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=None, help="At most this many [20]")
@pass_ctx
def show(
    ctx: Context,
    target: str,
    partition_arg: int | None,
    offset_arg: int | None,
    partition: int | None,
    offset: int | None,
    limit: int | None,
) -> None:
    """Records of a dead-letter topic, with why each was dead-lettered and where it came from.

    TARGET is a topic (`saga dlq show saga.flights.commands.dlq`, or with PARTITION and OFFSET)
    or one record, `topic[partition]@offset` as this command prints it."""
    settings = ctx.settings()
    topic, partition, offset, one = _where(target, partition_arg, offset_arg, partition, offset)
    count = limit or (1 if one else 20)
    letters = _with_reader(settings, lambda r: r.read(topic, partition=partition, offset=offset, limit=count))

    def render() -> None:
        if not letters:
            click.echo(f"{topic}: no records")
        for letter in letters:
            click.echo("\n".join(_describe(letter)))

    ctx.emit([letter.as_dict() for letter in letters], render)


def _where(
    target: str, partition_arg: int | None, offset_arg: int | None, partition: int | None, offset: int | None
) -> tuple[str, int | None, int | None, bool]:
    """(topic, partition, offset, whether one record is asked for) from the arguments."""
    if "[" in target:
        try:
            topic, at_partition, at_offset = parse_ref(target)
        except DeadLetterError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
        return topic, at_partition, at_offset, True
    if partition_arg is not None:
        partition = partition_arg
    if offset_arg is not None:
        offset = offset_arg
    if offset is not None and partition is None:
        raise click.UsageError("an offset needs its partition (--partition P, or TOPIC PARTITION OFFSET)")
    return target, partition, offset, offset_arg is not None


def _describe(letter: DeadLetter) -> list[str]:
    at = letter.timestamp.isoformat(sep=" ", timespec="seconds") if letter.timestamp else "?"
    lines = [
        f"{letter.ref}  at {at}",
        f"  message   {letter.message_type or '?'} {letter.message_id or '?'}  saga {letter.saga_id or '-'}",
    ]
    if not letter.is_dead_letter:
        lines.append("  (no dlq_* headers: not a dead letter)")
    else:
        lines += [
            f"  reason    {letter.reason}",
            f"  error     {letter.error_type}  attempts {letter.attempts}  group {letter.consumer_group}",
            f"  from      {letter.original}",
        ]
    if letter.redriven_from:
        lines.append(f"  redriven from {letter.redriven_from}")
    if letter.value is not None:
        value = letter.value.decode(errors="replace")
        lines.append(f"  value     {value[:VALUE_SHOWN]}{'...' if len(value) > VALUE_SHOWN else ''}")
    return lines


@dlq.command()
@click.argument("refs", nargs=-1, metavar="[REF]...")
@click.option("--all", "all_of", default=None, metavar="TOPIC", help="Every record of this dead-letter topic")
@click.option("--dry-run", is_flag=True, help="Check and print, send nothing")
@pass_ctx
def redrive(ctx: Context, refs: tuple[str, ...], all_of: str | None, dry_run: bool) -> None:
    """Send dead letters back to the topic and partition they came from, with their key, value
    and message headers (the same message id) and a `redriven_from` header.

    REF is `topic[partition]@offset`; or `--all TOPIC`. Every record is read and checked
    before any is sent. The consumer's inbox applies a message at most once, so redriving a
    dead letter again (or one that was applied meanwhile) changes nothing."""
    if bool(refs) == bool(all_of):
        raise click.UsageError("name the dead letters: REF... (topic[partition]@offset) or --all TOPIC")
    try:
        wanted = [parse_ref(ref) for ref in refs]
    except DeadLetterError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from None
    settings = ctx.settings()

    async def go(reader: DeadLetterReader) -> list[Redrive]:
        if all_of is not None:
            letters = await reader.read(all_of, limit=None)
        else:
            letters = [await reader.get(*where) for where in wanted]
        for letter in letters:
            letter.redrive_target()  # all checked before the first is sent
        done = []
        for letter in letters:
            done.append(await reader.redrive(letter, dry_run=dry_run))
            if not ctx.as_json:
                click.echo(_sent(done[-1], dry_run))
        return done

    done = _with_reader(settings, go)
    if ctx.as_json:
        ctx.emit([_redrive_dict(r, dry_run) for r in done], lambda: None)
    elif not done:
        click.echo(f"{all_of}: no records to redrive")


def _sent(redrive: Redrive, dry_run: bool) -> str:
    letter = redrive.letter
    verb = "would redrive" if dry_run else "redrove"
    return f"{verb} {letter.ref} -> {redrive.to}  ({letter.message_type or '?'} {letter.message_id or '?'})"


def _redrive_dict(redrive: Redrive, dry_run: bool) -> dict[str, Any]:
    return {
        "ref": redrive.letter.ref,
        "to": redrive.to,
        "topic": redrive.topic,
        "partition": redrive.partition,
        "offset": redrive.offset,
        "message_type": redrive.letter.message_type,
        "message_id": redrive.letter.message_id,
        "dry_run": dry_run,
    }
