"""`saga graph` on the saga language: parallel groups as a fork and a join, waits with their
signals and timeouts, timers, child sagas, and the compensation edges. Pure: the drawing
needs only the saga class."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from pydantic import BaseModel

from saga import RemoteStep, Saga, Until
from saga._graph import graph
from tests.cli.language_sagas import PackSaga, ShopSaga

pytestmark = pytest.mark.pure

NODE = re.compile(r"^    (\w+)(\[\[|\[/|\[|\(\(|\(\[|\(|\{\{|>)\"?(.*?)\"?(\]\]|/\]|\]|\)\)|\]\)|\)|\}\})$")
EDGE = re.compile(r"^    (\w+) (-->|-\.->|-\. [a-z ]+ \.->) (\w+)$")


def parse(diagram: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The nodes (id -> label) and edges (from, arrow, to) of a flowchart; any other line
    (besides the header and the local class) fails the test."""
    lines = diagram.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if line.startswith(("    classDef ", "    class ")):
            continue
        if edge := EDGE.match(line):
            edges.append((edge[1], edge[2], edge[3]))
            continue
        node = NODE.match(line)
        assert node is not None, f"not a node, an edge or a class: {line!r}"
        assert node[1] not in nodes, f"node {node[1]} declared twice"
        nodes[node[1]] = node[3]
    for source, _, target in edges:
        assert source in nodes, f"edge from an undeclared node {source}"
        assert target in nodes, f"edge to an undeclared node {target}"
    return nodes, edges


def forward(edges: list[tuple[str, str, str]]) -> dict[str, set[str]]:
    successors: dict[str, set[str]] = defaultdict(set)
    for source, arrow, target in edges:
        if arrow == "-->":
            successors[source].add(target)
    return successors


def test_every_construct_is_drawn_with_its_details() -> None:
    diagram = graph(ShopSaga)
    nodes, _ = parse(diagram)
    lines = set(diagram.splitlines())
    assert nodes["reserve"] == "reserve<br/>remote: stock · compensatable · timeout 30s"
    # A wait is a flag naming its signals and its timeout; a wait for any names each signal.
    assert '    wait_for_picked>"wait_for_picked<br/>waits for signal Picked · timeout 60s"]' in lines
    assert nodes["wait_for_any_approved_rejected"] == (
        "wait_for_any_approved_rejected<br/>waits for the first signal of Approved, Rejected · timeout 30s"
    )
    # A child saga is a subroutine box naming the child's saga type.
    assert '    pay[["pay<br/>child saga: PaymentSaga · compensatable"]]' in lines
    # Timers: Delay(5) and Until(ship_date), parallelograms saying until when.
    assert '    delay_5s[/"delay_5s<br/>timer: waits 5s"/]' in lines
    assert '    until_ship_date[/"until_ship_date<br/>timer: waits until ship_date(data)"/]' in lines
    assert '    charge{{"charge<br/>remote: payments · pivot"}}' in lines
    assert nodes["label"] == "label<br/>remote: labels · compensatable · 3 attempts"
    assert "    class approve local" in lines


def test_a_parallel_group_is_a_fork_to_its_members_and_a_join_after_them() -> None:
    _, edges = parse(graph(ShopSaga))
    successors = forward(edges)
    members = {"pack", "label", "wait_for_any_approved_rejected", "pay"}
    assert successors["wait_for_picked"] == {"fork_1"}
    assert successors["fork_1"] == members
    assert all(successors[m] == {"join_1"} for m in members)
    assert successors["join_1"] == {"charge"}
    assert successors["charge"] == {"fork_2"}
    assert successors["fork_2"] == {"ship", "invoice", "delay_5s"}
    assert successors["join_2"] == {"until_ship_date"}
    # The forward edges make one path of nodes and groups from start to completed.
    reached, frontier = {"start"}, ["start"]
    while frontier:
        for target in successors[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    assert "completed" in reached
    assert {s.name for s in ShopSaga.all_steps()} <= reached


def test_compensation_undoes_a_groups_members_that_took_effect_then_the_earlier_steps() -> None:
    nodes, edges = parse(graph(ShopSaga))
    failures = {(s, a, t) for s, a, t in edges if a.startswith("-. ")}
    assert failures == {
        ("reserve", "-. fails .->", "compensated"),
        ("wait_for_picked", "-. times out .->", "undo_reserve"),
        # Any member failing (or a wait timing out) undoes the siblings that took effect.
        ("pack", "-. fails .->", "undo_fork_1"),
        ("label", "-. fails .->", "undo_fork_1"),
        ("pay", "-. fails .->", "undo_fork_1"),
        ("wait_for_any_approved_rejected", "-. times out .->", "undo_fork_1"),
        ("charge", "-. fails .->", "undo_fork_1"),
    }
    undo = {(s, t) for s, a, t in edges if a == "-.->"}
    assert undo == {
        ("undo_fork_1", "undo_pack"),
        ("undo_fork_1", "undo_label"),
        ("undo_fork_1", "undo_pay"),
        ("undo_pack", "undo_reserve"),
        ("undo_label", "undo_reserve"),
        ("undo_pay", "undo_reserve"),
        ("undo_reserve", "compensated"),
    }
    # Compensating a completed child asks the child to run its own compensations.
    assert nodes["undo_pay"] == "undo pay<br/>child saga PaymentSaga compensates"
    assert nodes["undo_pack"] == "undo pack<br/>remote: warehouse"
    # Waits, timers and the steps after the pivot are never undone.
    assert not {"undo_wait_for_picked", "undo_delay_5s", "undo_ship", "undo_charge"} & set(nodes)


def test_a_member_failing_goes_straight_to_its_one_undoable_sibling() -> None:
    nodes, edges = parse(graph(PackSaga))
    failures = {(s, a, t) for s, a, t in edges if a.startswith("-. ")}
    assert failures == {
        ("pack", "-. fails .->", "undo_pay"),
        ("pay", "-. fails .->", "undo_pack"),
        ("wait_for_picked", "-. times out .->", "undo_fork_1"),
        # wait_for_approved has no timeout: it cannot fail, so no edge leaves it.
    }
    assert nodes["wait_for_approved"] == "wait_for_approved<br/>waits for signal Approved"
    assert ("start", "-->", "fork_1") in edges


class Item(BaseModel):
    order_id: str


class Send(RemoteStep[Item]):
    participant = "mail"
    reply = Item
    compensation_reply = Item

    def command(self, data: Item) -> Item:
        return data

    def compensation(self, data: Item) -> Item:
        return data


class LambdaSaga(Saga[Item]):
    steps = (Send, Until(lambda data: data.due))


def test_label_text_that_mermaid_would_read_as_markup_is_escaped() -> None:
    nodes, _ = parse(graph(LambdaSaga))
    assert nodes["until"] == "until<br/>timer: waits until #lt;lambda#gt;(data)"
