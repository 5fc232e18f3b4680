"""Alembic environment: runs on the connection the store hands over (or on the URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from genealogy.tables import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the store's connection if given, else over ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit(
        "lothub migrations run online only: set LOTHUB_DATABASE_URL and run `lothub db upgrade`"
    )
run_migrations_online()
