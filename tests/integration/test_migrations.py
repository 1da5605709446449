"""Migrations work on every backend and equal the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sync import db
from sync.models import Base


def test_upgrade_downgrade_upgrade_round_trip(db_url: str) -> None:
    """head -> base -> head leaves exactly the model's tables."""
    engine = db.create_engine(db_url)
    db.upgrade(engine)
    assert set(Base.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    db.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert db.current_revision(engine) is not None
    engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    """Autogenerate finds no difference between the migrated schema and the models."""
    engine = db.create_engine(db_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []
