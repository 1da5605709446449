"""Set-based writes for the engine's hot paths, one small helper per idea, on all three dialects.

Where rows are many (a first sync writes a link per member, a full-scan status pull stores
every suppressed contact), the engine writes them with one core statement per batch instead of
one ORM object per row: ``INSERT ... ON CONFLICT DO UPDATE`` on SQLite and PostgreSQL (there
from ``unnest`` of one text per column), ``INSERT ... ON DUPLICATE KEY UPDATE`` on MariaDB/MySQL
(whose driver rewrites a list of rows into one multi-row statement). ``analyze`` refreshes the
planner's statistics after such a load, so that the lookups of the next chunk or run do not
choose a scan on a table the planner still believes to be empty (a server behind on autovacuum,
or with it off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

from sync.sql import NULL, SEP, text_array

log = structlog.get_logger(__name__)

#: Rows per statement: well below every driver's parameter limit (SQLite's is 32,766).
BULK_ROWS = 1000


def upsert(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str],
           update: Sequence[str]) -> None:
    """Insert ``rows`` into ``table``; a row whose ``key`` (a unique constraint's columns) exists
    already gets the ``update`` columns from the new row. Every row carries the same columns."""
    if not rows:
        return
    if not update:
        raise ValueError("upsert needs at least one column to update on a conflict")
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        _upsert_unnest(session, table, rows, key, update)
        return
    for start in range(0, len(rows), BULK_ROWS):
        part = [dict(row) for row in rows[start:start + BULK_ROWS]]
        session.execute(_upsert_statement(dialect, table, key, update), part)


#: Rows per statement on PostgreSQL, where a statement carries one text per column.
UNNEST_ROWS = 10_000
#: How a column's values travel in one text (sync.sql.SEP, NULL).
_SEP, _NULL = SEP, NULL


def _upsert_unnest(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]], key: Sequence[str],
                   update: Sequence[str]) -> None:
    """PostgreSQL: ``INSERT ... SELECT unnest(string_to_array(:a, sep, null)), ... ON CONFLICT DO
    UPDATE``: one text per column, split by the server. psycopg sends a list of rows as a
    pipeline of one-row statements, which the server executes one by one (about 85 µs a row on
    2 cores); an array per column costs psycopg about 25 µs a row to quote; one text per column
    is joined in C. The statement's text is the same for every batch (parsed and planned once).
    One statement may not touch a row twice: of rows with the same key the last one is written
    (what writing them one after another would leave, for every column it updates)."""
    names = list(rows[0])
    ordered = list({tuple(row[name] for name in key): row for row in rows}.values())
    for start in range(0, len(ordered), UNNEST_ROWS):
        statement = postgresql.insert(table).from_select(
            names, sa.select(*_unnested(session, table, names, ordered[start:start + UNNEST_ROWS])))
        session.execute(statement.on_conflict_do_update(
            index_elements=list(key), set_={name: statement.excluded[name] for name in update}))


def _unnested(session: Session, table: sa.Table, names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``unnest(string_to_array(:text, sep, null))::type`` per column ``names`` of ``table``: the rows
    as a set the server reads column by column (PostgreSQL)."""
    dialect = session.get_bind().dialect
    columns: list[Any] = []
    for name in names:
        column_type = table.c[name].type
        # Values as the column stores them (a TypeDecorator's processing: JSON as text, naive UTC).
        if isinstance(column_type, sa.TypeDecorator):
            process, stored = column_type.bind_processor(dialect), column_type.impl_instance
        else:
            process, stored = None, column_type
        values = [process(row[name]) for row in rows] if process else [row[name] for row in rows]
        texts = [_NULL if value is None else str(value) for value in values]
        joined = _SEP.join(texts)
        # ('' alone would split into no element at all: one row of an empty text goes as an array)
        if joined and joined.count(_SEP) == len(texts) - 1 and joined.count(_NULL) == values.count(None):
            parameter = sa.bindparam(f"rows_{name}", joined, type_=sa.Text())
            split = sa.func.string_to_array(parameter, sa.literal(_SEP, sa.Text()), sa.literal(_NULL, sa.Text()))
            columns.append(sa.cast(sa.func.unnest(split), stored).label(name))
        else:
            columns.append(sa.func.unnest(sa.bindparam(f"rows_{name}", values,
                                                       type_=postgresql.ARRAY(stored))).label(name))
    return columns


def _upsert_statement(dialect: str, table: sa.Table, key: Sequence[str], update: Sequence[str]) -> Any:
    if dialect in ("mysql", "mariadb"):
        on_mysql = mysql.insert(table)
        return on_mysql.on_duplicate_key_update({name: on_mysql.inserted[name] for name in update})
    if dialect == "postgresql":
        on_postgresql = postgresql.insert(table)
        return on_postgresql.on_conflict_do_update(
            index_elements=list(key), set_={name: on_postgresql.excluded[name] for name in update})
    if dialect == "sqlite":
        on_sqlite = sqlite.insert(table)
        return on_sqlite.on_conflict_do_update(
            index_elements=list(key), set_={name: on_sqlite.excluded[name] for name in update})
    raise NotImplementedError(f"no upsert for the {dialect} dialect (SQLite, PostgreSQL, MariaDB/MySQL)")


def insert_rows(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """A plain multi-row INSERT (rows known to be new), in statements of ``BULK_ROWS`` rows."""
    for start in range(0, len(rows), BULK_ROWS):
        session.execute(sa.insert(table), [dict(row) for row in rows[start:start + BULK_ROWS]])


def update_by_key(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
                  key: Mapping[str, Any], match: Sequence[str]) -> None:
    """UPDATE one row per entry of ``rows``, found by the fixed ``key`` values plus the ``match``
    columns of the entry (a unique key); every other column of the entry is written."""
    if not rows:
        return
    columns = [name for name in rows[0] if name not in match]
    if session.get_bind().dialect.name == "postgresql":
        # UPDATE ... FROM (SELECT unnest(...), ...): one statement per 10,000 rows, not a
        # pipeline of one-row UPDATEs (see _upsert_unnest)
        names = [*match, *columns]
        unique = list({tuple(row[name] for name in match): row for row in rows}.values())   # the last one wins
        for start in range(0, len(unique), UNNEST_ROWS):
            given = sa.select(*_unnested(session, table, names, unique[start:start + UNNEST_ROWS])).subquery("given")
            session.execute(sa.update(table).where(
                *(table.c[name] == value for name, value in key.items()),
                *(table.c[name] == given.c[name] for name in match),
            ).values({name: given.c[name] for name in columns}))
        return
    statement = sa.update(table).where(
        *(table.c[name] == value for name, value in key.items()),
        *(table.c[name] == sa.bindparam(f"match_{name}") for name in match),
    ).values({name: sa.bindparam(f"set_{name}") for name in columns})
    for start in range(0, len(rows), BULK_ROWS):
        params = [{**{f"match_{name}": row[name] for name in match},
                   **{f"set_{name}": row[name] for name in columns}} for row in rows[start:start + BULK_ROWS]]
        session.connection().execute(statement, params)


def one_of(dialect: str, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the
    count: the statement's text is the same for every batch, so psycopg parses it once instead of
    splitting a new 1,000-placeholder query for every lookup (8 % of a first sync's CPU)."""
    if dialect == "postgresql":
        return column == sa.any_(text_array(values, postgresql.ARRAY(sa.String())))
    return column.in_(list(values))


def analyze(session: Session, tables: Sequence[sa.Table], *, reason: str, rows: int) -> None:
    """Refresh the planner's statistics of our own ``tables`` and commit (MariaDB's ANALYZE TABLE
    commits implicitly, so the caller's session must hold no pending work). Logged, with why."""
    dialect = session.get_bind().dialect.name
    preparer = session.get_bind().dialect.identifier_preparer
    names = [preparer.format_table(table) for table in tables]
    if dialect in ("mysql", "mariadb"):
        session.execute(sa.text(f"ANALYZE TABLE {', '.join(names)}")).all()
    elif dialect == "postgresql":
        session.execute(sa.text(f"ANALYZE {', '.join(names)}"))
    else:
        for name in names:
            session.execute(sa.text(f"ANALYZE {name}"))
    session.commit()
    log.info("db.analyzed", tables=[table.name for table in tables], reason=reason, rows_written=rows)
