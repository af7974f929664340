"""Peers side by side, in one run, on the same Postgres server:

1. the order saga (bench/_peers_orders.py: reserve credit, reserve stock, charge payment, each a
   Postgres transaction of a participant, then approve the order locally; 1 order in 10 is
   refused at the charge, and the stock, then the credit, are released) in our framework (relay,
   orchestrator worker and three participants, each its own process, through Kafka) and as a
   DBOS Transact workflow (its own process; system and app databases on the same server).
   Same orders, same window of sagas in flight, results checked before any figure is printed.
2. the `eventsourcing` library's append and replay against our event store (bench/_peers_es.py).

    python bench/peers.py [--sagas 1000] [--events 10000] [--window 200] [--orders-per-tx 1]
                          [--dbos-api sync|async] [--rounds 1]
                                                (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS set)

`--rounds N` runs it all N times, the sides alternating, and prints each round, then the medians.

`make bench-peers` installs the `bench` extra and runs it. CPU ms per saga, by process group:
ours counts this process (it starts the sagas and polls for their ends), the five worker
processes, the Kafka broker (all of it) and Postgres; DBOS counts its process (which starts its
workflows) and Postgres. Postgres is, on both sides, the backends connected to that side's
databases plus the server's shared background processes (bench/_peers_cpu.py).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from importlib import metadata
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from bench import _peers_es, _peers_runs
except ModuleNotFoundError as missing:  # dbos or eventsourcing: the `bench` extra
    sys.exit(
        f"bench/peers.py needs {missing.name}: `make bench-peers` installs the `bench` extra and runs it"
    )
from saga._process import run


def versions() -> dict[str, str]:
    return {
        name: metadata.version(name) for name in ("saga-es", "dbos", "eventsourcing", "sqlalchemy", "psycopg")
    }


def table(
    ours: _peers_runs.Result, dbos: _peers_runs.Result, es: tuple[_peers_es.Rates, _peers_es.Rates]
) -> None:
    print(f"{'order saga (4 steps, 1 in 10 compensated)':<44}{'ours':>12}{'DBOS':>12}{'ours/DBOS':>11}")
    print(
        f"{'sagas/s':<44}{ours.sagas_per_s:>12,.1f}{dbos.sagas_per_s:>12,.1f}{ours.sagas_per_s / dbos.sagas_per_s:>11.2f}"
    )
    ours_cpu, dbos_cpu = sum(ours.cpu_ms.values()), sum(dbos.cpu_ms.values())
    print(
        f"{'CPU ms per saga, all counted':<44}{ours_cpu:>12.2f}{dbos_cpu:>12.2f}{ours_cpu / dbos_cpu:>11.2f}"
    )
    # The broker is shared with whatever else runs (other runs' traffic lands in its CPU too).
    ours_own = ours_cpu - ours.cpu_ms.get("kafka", 0.0)
    print(
        f"{'CPU ms per saga, without the Kafka broker':<44}{ours_own:>12.2f}{dbos_cpu:>12.2f}{ours_own / dbos_cpu:>11.2f}"
    )
    for role, ms in sorted((ours.cpu_ms | dbos.cpu_ms).items()):
        if role in ("postgres", "kafka"):
            continue
        side = f"{ms:>12.2f}{'':>12}" if role in ours.cpu_ms else f"{'':>12}{ms:>12.2f}"
        print(f"{'  ' + role:<44}{side}")
    print(
        f"{'  postgres (their databases + shared)':<44}{ours.cpu_ms['postgres']:>12.2f}{dbos.cpu_ms['postgres']:>12.2f}"
    )
    print(f"{'  kafka (the whole broker)':<44}{ours.cpu_ms.get('kafka', 0.0):>12.2f}{'-':>12}")
    print(
        f"{'saga duration p50 (ms, start to end, loaded)':<44}{ours.duration_p50_ms:>12.0f}{dbos.duration_p50_ms:>12.0f}"
    )
    mine, theirs = es
    print()
    print(f"{'events/s':<44}{'ours':>12}{'eventsrc':>12}{'ours/them':>11}")
    print(
        f"{'append':<44}{mine.append_per_s:>12,.0f}{theirs.append_per_s:>12,.0f}{mine.append_per_s / theirs.append_per_s:>11.2f}"
    )
    print(
        f"{'replay (read back and fold)':<44}{mine.replay_per_s:>12,.0f}{theirs.replay_per_s:>12,.0f}{mine.replay_per_s / theirs.replay_per_s:>11.2f}"
    )


def round_line(sagas: dict[str, list[_peers_runs.Result]], events: dict[str, list[_peers_es.Rates]]) -> str:
    ours, dbos, mine, theirs = sagas["ours"][-1], sagas["dbos"][-1], events["ours"][-1], events["theirs"][-1]
    return (
        f"sagas/s ours {ours.sagas_per_s:.1f} DBOS {dbos.sagas_per_s:.1f}; "
        f"CPU ms per saga ours {sum(ours.cpu_ms.values()):.1f} DBOS {sum(dbos.cpu_ms.values()):.1f}; "
        f"events/s append ours {mine.append_per_s:.0f} theirs {theirs.append_per_s:.0f}, "
        f"replay ours {mine.replay_per_s:.0f} theirs {theirs.replay_per_s:.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=1000, help="sagas (workflows) on each side")
    parser.add_argument(
        "--window", type=int, default=200, help="at most this many sagas in flight, each side"
    )
    parser.add_argument("--orders-per-tx", type=int, default=1, help="ours: sagas started per transaction")
    parser.add_argument(
        "--dbos-api", choices=["sync", "async"], default="sync", help="see bench/_peers_dbos.py"
    )
    parser.add_argument("--events", type=int, default=10_000, help="events appended then replayed, each side")
    parser.add_argument("--streams", type=int, default=100, help="the events spread over this many streams")
    parser.add_argument("--batch", type=int, default=10, help="events per append (per save, theirs)")
    parser.add_argument("--rounds", type=int, default=1, help="all of it this many times; medians printed")
    args = parser.parse_args()
    server, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not server or not bootstrap:
        sys.exit("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set: run `make bench-peers`")
    if args.events % args.batch:
        sys.exit(f"--events ({args.events}) must be a multiple of --batch ({args.batch})")
    try:
        import psycopg

        from eventstore import libpq_url

        psycopg.connect(libpq_url(server), connect_timeout=10).close()
    except psycopg.OperationalError as error:
        sys.exit(f"cannot reach Postgres at DATABASE_URL ({error}): start the services (`make services`)")

    sagas: dict[str, list[_peers_runs.Result]] = {"ours": [], "dbos": []}
    events: dict[str, list[_peers_es.Rates]] = {"ours": [], "theirs": []}
    for r in range(args.rounds):  # the sides alternate, so that a change of load hits both
        sagas["dbos"].append(await _peers_runs.dbos(server, args.sagas, args.window, args.dbos_api))
        sagas["ours"].append(
            await _peers_runs.ours(server, bootstrap, args.sagas, args.orders_per_tx, args.window)
        )
        events["ours"].append(await _peers_es.ours(server, args.events, args.streams, args.batch))
        events["theirs"].append(await _peers_es.theirs(server, args.events, args.streams, args.batch))
        print(f"round {r + 1}: " + round_line(sagas, events), flush=True)
    # Each side's median round (the lower of two) by sagas/s, so that its CPU is that round's.
    ours, dbos = (sorted(sagas[side], key=lambda x: x.sagas_per_s)[(args.rounds - 1) // 2] for side in sagas)
    mine, theirs = (
        _peers_es.Rates(
            statistics.median_low(x.append_per_s for x in events[side]),
            statistics.median_low(x.replay_per_s for x in events[side]),
        )
        for side in events
    )
    table(ours, dbos, (mine, theirs))
    print(
        orjson.dumps(
            {
                "ours_per_s": round(ours.sagas_per_s, 1),
                "dbos_per_s": round(dbos.sagas_per_s, 1),
                "ratio_vs_dbos": round(ours.sagas_per_s / dbos.sagas_per_s, 3),
                "ours_cpu_ms_per_saga": round(sum(ours.cpu_ms.values()), 2),
                "ours_cpu_ms_per_saga_without_kafka": round(
                    sum(ours.cpu_ms.values()) - ours.cpu_ms["kafka"], 2
                ),
                "dbos_cpu_ms_per_saga": round(sum(dbos.cpu_ms.values()), 2),
                "ours_saga_p50_ms": round(ours.duration_p50_ms),
                "dbos_saga_p50_ms": round(dbos.duration_p50_ms),
                "eventsourcing_append_ratio": round(mine.append_per_s / theirs.append_per_s, 3),
                "eventsourcing_replay_ratio": round(mine.replay_per_s / theirs.replay_per_s, 3),
                "ours_append_per_s": round(mine.append_per_s),
                "eventsourcing_append_per_s": round(theirs.append_per_s),
                "ours_replay_per_s": round(mine.replay_per_s),
                "eventsourcing_replay_per_s": round(theirs.replay_per_s),
                "sagas": args.sagas,
                "rounds": args.rounds,
                "window": args.window,
                "orders_per_tx": args.orders_per_tx,
                "dbos_api": args.dbos_api,
                "events": args.events,
                "versions": versions(),
            }
        ).decode()
    )


if __name__ == "__main__":
    run(main())
