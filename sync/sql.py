"""SQL helpers that both the CRM reader and the engine need, below both of them: the CRM
database's clock, and array parameters for PostgreSQL. (``sync.crm`` imports nothing from
``sync.engine``; a test in tests/unit/test_import_graph.py keeps the import graph free of circles.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

#: How a column's values travel in one text: separated by SEP, NULL as NULL (control characters
#: no id, address or hash holds; a value that holds one is sent as an array instead).
SEP, NULL = "\x1f", "\x1e"


def crm_now(crm_engine: sa.Engine) -> dt.datetime:
    """The run's upper bound, read from the CRM database's own clock (its ``updated_at`` values
    come from there), as aware UTC."""
    expression = {"postgresql": "SELECT (now() AT TIME ZONE 'UTC')", "mysql": "SELECT UTC_TIMESTAMP(6)",
                  "mariadb": "SELECT UTC_TIMESTAMP(6)"}.get(crm_engine.dialect.name,
                                                            "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
    with crm_engine.connect() as conn:
        value = conn.scalar(sa.text(expression))
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime), value
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def text_array(values: Sequence[Any], array_type: Any, cast_to: Any = None) -> Any:
    """An array parameter for PostgreSQL: ``string_to_array(:one_text, sep)`` (joined in C; psycopg
    quotes a list item by item, about 10 µs each), or the list itself where a value is not a text,
    holds the separator, or is one empty text (which would split into nothing)."""
    texts = list(values)
    joined = SEP.join(texts) if all(isinstance(value, str) for value in texts) else ""
    if not joined or joined.count(SEP) != len(texts) - 1:
        listed = sa.bindparam(None, texts, type_=array_type)
        return listed if cast_to is None else sa.cast(listed, cast_to)
    split = sa.func.string_to_array(sa.bindparam(None, joined, type_=sa.Text()), sa.literal(SEP, sa.Text()))
    return split if cast_to is None else sa.cast(split, cast_to)
