"""Testing sagas: a pytest plugin, a running system in-process, a virtual clock.

System          the app running in the test's process (`saga_system` fixture, or open_system)
SystemConfig    what a System runs: the app, the services, the template database
VirtualClock    time that moves only when a test moves it (`await clock.advance(3600)`)
Exploration     what `System.explore` found: a FaultRun per fault (outcome, message)
Fault           a fault an exploration tries (a duplicate, a timeout, a worker killed)
FaultRun        one run of an exploration
Killed          a worker killed at a crash point (the stand-in for kill -9)
Services        the Postgres and Kafka a run uses; ServicesError when they cannot be had
scenario        decision tests without services: given events, when a reply/timeout/signal,
                expect events and commands (Scenario, Decided, ScenarioError, ExpectationFailed)
"""

from saga.testing._clock import VirtualClock
from saga.testing._crashes import Killed
from saga.testing._databases import SchemaHook
from saga.testing._explore import Exploration, FaultRun, Invariant
from saga.testing._faults import Fault
from saga.testing._scenario import EPOCH, Scenario, scenario
from saga.testing._scenario_decided import Decided
from saga.testing._scenario_text import ExpectationFailed, ScenarioError
from saga.testing._services import Services, ServicesError, find_services
from saga.testing._system import System, SystemConfig, open_system

__all__ = [
    "EPOCH",
    "Decided",
    "ExpectationFailed",
    "Exploration",
    "Fault",
    "FaultRun",
    "Invariant",
    "Killed",
    "Scenario",
    "ScenarioError",
    "SchemaHook",
    "Services",
    "ServicesError",
    "System",
    "SystemConfig",
    "VirtualClock",
    "find_services",
    "open_system",
    "scenario",
]
