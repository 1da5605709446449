"""Alembic environment: the engine comes from the caller (`crm-esp-sync db upgrade`, tests)
or, for plain `alembic` use, from the daemon's settings."""

from __future__ import annotations

from alembic import context

from sync.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from sync.config import load_settings
        from sync.db import create_engine

        engine = create_engine(load_settings().database_url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
