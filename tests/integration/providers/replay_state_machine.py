"""Replay a state machine example step by step, from the steps Hypothesis printed (a tool, not a test:
pytest collects this file only when it is named on the command line).

``make fuzz`` prints a failing example as ``state.<rule>(...)`` lines, each after the ``Draw N
(label): value`` lines of its ``data`` draws. Saved into a file (the ``E`` margin pytest adds is
stripped), they replay here without Hypothesis: each rule is called on a new machine with its
arguments and its draws, in about 3 s where a fuzz run takes minutes. Edit the file to cut steps
or add ``# stop`` (the replay stops there, the state is kept for a debugger) and run::

    REPLAY=fake-keyed REPLAY_FILE=/tmp/steps.txt .venv/bin/pytest -s -p no:cacheprovider \\
        tests/integration/providers/replay_state_machine.py

``REPLAY`` is the harness id as the fuzz names it (``fake-keyed``, ``euromsg-...``, ``postatr``);
``REPLAY_VERBOSE=1`` prints every step with the provider's records and the CRM's members after it.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.models import Erasure, SyncRun
from tests.integration.providers import test_state_machine
from tests.integration.providers.harness import HARNESSES, harness_id
from tests.integration.providers.state_machine_oracle import (
    link_addresses,
    open_rejects,
    remote_lists,
    stored_statuses,
)
from tests.integration.providers.test_state_machine import ProviderMachine, machine_class

_STEP = re.compile(r"^state\.(\w+)\((.*)\)$")
_DRAW = re.compile(r"^Draw \d+ \(([^)]*)\): (.*)$")


class _Draws:
    """Stands for Hypothesis's ``data``: each draw returns the next printed value (its label checked)."""

    def __init__(self, values: list[tuple[str, Any]]) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        assert self.values, f"the step draws more than was printed ({label})"
        printed, value = self.values.pop(0)
        assert printed == label, f"the step draws {label!r} where {printed!r} was printed"
        return value


def parse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(rule, keyword arguments) per printed step; ``data`` is a ``_Draws`` of the draws before it."""
    steps: list[tuple[str, dict[str, Any]]] = []
    draws: list[tuple[str, Any]] = []
    for raw in text.splitlines():
        line = re.sub(r"^E\s+", "", raw).strip()
        if line == "# stop":
            steps.append(("# stop", {}))
            continue
        drawn = _DRAW.match(line)
        if drawn:
            draws.append((drawn.group(1), ast.literal_eval(drawn.group(2))))
            continue
        step = _STEP.match(line)
        if not step or step.group(1) == "teardown":
            continue
        call = ast.parse(f"f({step.group(2)})", mode="eval").body
        assert isinstance(call, ast.Call)
        kwargs: dict[str, Any] = {}
        for keyword in call.keywords:
            if keyword.arg == "data":
                kwargs["data"] = _Draws(draws)
                draws = []
            else:
                kwargs[str(keyword.arg)] = ast.literal_eval(keyword.value)
        steps.append((step.group(1), kwargs))
    return steps


def _describe(machine: ProviderMachine) -> str:
    """The CRM's live members, the provider's records, our links, stored statuses, open rejects, erasures."""
    world = machine.world
    members = {m: (world.member(m).email, world.lists_of(m)) for m in machine.live}
    lines = [f"crm: {members}", f"provider: {remote_lists(machine.harness, machine.caps)}",
             f"links: {link_addresses(world)}", f"statuses: {stored_statuses(world)}",
             *(f"reject: {r}" for r in open_rejects(world))]
    with world.engine.connect() as conn:
        erasures = conn.execute(sa.select(Erasure.crm_member_id, Erasure.remote_id, Erasure.action)).all()
        runs = conn.execute(sa.select(SyncRun.id, SyncRun.status).order_by(SyncRun.id)).all()
    lines.append(f"erasures: {erasures}")
    lines.append(f"runs: {runs}")
    return "\n".join(f"    {line}" for line in lines)


@pytest.mark.skipif(not os.environ.get("REPLAY_FILE"), reason="a tool: REPLAY and REPLAY_FILE name what to replay")
def test_replay(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = os.environ.get("REPLAY", "")
    matches = [cls for cls in HARNESSES if harness_id(cls) == wanted]
    assert matches, f"REPLAY={wanted!r} names no harness; one of {[harness_id(c) for c in HARNESSES]}"
    tolerated: list[str] = []       # the machine's Hypothesis events (known gaps), printed at the end
    monkeypatch.setattr(test_state_machine, "event", tolerated.append)
    machine_cls = machine_class(matches[0], sqlite_template, tmp_path, monkeypatch)
    steps = parse(Path(os.environ["REPLAY_FILE"]).read_text())
    verbose = bool(os.environ.get("REPLAY_VERBOSE"))
    machine = machine_cls()
    try:
        for number, (name, kwargs) in enumerate(steps, 1):
            if name == "# stop":
                print(f"stopped before step {number}")
                break
            shown = {k: (v.values if isinstance(v, _Draws) else v) for k, v in kwargs.items()}
            print(f"step {number}: {name} {shown}")
            try:
                getattr(machine, name)(**kwargs)
            finally:
                if verbose:
                    print(_describe(machine))
    finally:
        machine.teardown()
        if tolerated:
            print(f"tolerated: {sorted(set(tolerated))}")
