"""The chaos suite: thousands of order sagas while a scheduler injects faults.

    python -m chaos [--sagas 3000] [--faults all] [--duration 240] [--seed 2026]   (make chaos)

The order example (`examples/orders/`) runs as separate `saga` processes (relay, orchestrator
worker, customers, inventory, payments) on a Postgres and a Kafka broker of the run's own,
never the servers the test suite uses. Orders are placed at an even pace (about half picked
at once, the others by the harness's warehouse once their saga waits for the Picked signal,
`--lost` never) while faults go in:
SIGKILLs of each process kind and of several at once, Postgres stopped fast and immediately,
Kafka stopped and SIGKILLed, SIGTERM of everything while Postgres is down, duplicated and
replayed records, poison on every consumed topic, commands whose reply topic cannot be
written. Then the run waits for every saga to end and checks what happened (`chaos.checks`
defines each count: stuck, lost, applied_twice, timeouts_due_to_outage, invariants_ok).

A package rather than one script: the servers, the processes, the fault kinds, the checks
and the report are each a module of their own, importable by the small variant in
`tests/test_chaos.py`.
"""
