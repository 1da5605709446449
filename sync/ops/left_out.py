"""What ``once``/``backfill`` report of the members a run leaves out (``--dry-run``, ``--verbose``,
``--output FILE --format csv|jsonl``, ``--json``; docs/operating.md, "The dry run").

One row per member and reason: the member, where (tenant, provider, connection, the CRM lists it is
left out of), the reason code (``sync.engine.context.LEFT_OUT_REASONS``) and a detail for a person.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sync.engine.context import LEFT_OUT_REASONS

if TYPE_CHECKING:
    from sync.engine.runner import RunResult
    from sync.ops.pulled import Output

#: The columns of a row, in the order of the csv file.
COLUMNS = ("member_id", "email", "tenant", "connection_id", "provider", "lists", "reason", "detail")
#: ``--json``'s document; changes as ``status --json``'s does (fields only added).
SCHEMA_VERSION = 1
#: Plan entries shown as counts (and named in ``--json``).
PLAN_FIELDS = ("lists_create", "lists_rename", "lists_delete", "lists_rejected", "members_add", "members_update",
               "members_remove")


def left_out_rows(results: Iterable[RunResult]) -> list[dict[str, Any]]:
    """Every left-out member of these runs, as rows (``COLUMNS``; ``lists`` a list of CRM list ids)."""
    rows = []
    order = {reason: n for n, reason in enumerate(LEFT_OUT_REASONS)}
    for result in results:
        entries = result.plan.left_out if result.plan is not None else []
        for entry in sorted(entries, key=lambda e: (order.get(e.reason, len(order)), e.member_id, e.lists)):
            rows.append({"member_id": entry.member_id, "email": entry.email, "tenant": result.tenant,
                         "connection_id": result.connection_id, "provider": result.provider,
                         "lists": list(entry.lists), "reason": entry.reason, "detail": entry.detail})
    return rows


def by_reason(result: RunResult) -> Counter[str]:
    """Left-out members of one run per reason (a member counted once per reason)."""
    if result.plan is None:
        return Counter()
    return Counter({reason: len({e.member_id for e in result.plan.left_out if e.reason == reason})
                    for reason in LEFT_OUT_REASONS
                    if any(e.reason == reason for e in result.plan.left_out)})


def document(results: Sequence[RunResult], *, dry_run: bool) -> dict[str, Any]:
    """``--json``: the runs, each with its plan (or counts), its left-out members and their reasons."""
    runs = []
    for result in results:
        plan = result.plan
        runs.append({
            "tenant": result.tenant, "provider": result.provider, "connection_id": result.connection_id,
            "run_id": result.run_uid, "status": result.status, "error": result.error,
            "counts": dict(sorted(result.counts.items())),
            "plan": None if plan is None else {name: [list(item) if isinstance(item, tuple) else item
                                                      for item in getattr(plan, name)] for name in PLAN_FIELDS},
            "left_out_by_reason": dict(sorted(by_reason(result).items())),
            "left_out": [{key: value for key, value in row.items() if key not in ("tenant", "provider")}
                         for row in left_out_rows([result])],
        })
    return {"schema_version": SCHEMA_VERSION, "dry_run": dry_run, "runs": runs}


def write_rows(rows: Sequence[dict[str, Any]], fmt: str, target: Output) -> None:
    """The rows as csv (a header line; lists separated by spaces) or JSON lines, into ``target``
    (a file written beside FILE and renamed over it when complete, mode 0600)."""
    stream = target.open()
    try:
        if fmt == "csv":
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(["" if row[c] is None else " ".join(row[c]) if c == "lists" else row[c]
                                 for c in COLUMNS])
        else:
            for row in rows:
                stream.write(json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False) + "\n")
    except BaseException:
        target.abort()
        raise
    target.commit()
