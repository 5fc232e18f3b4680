"""The Alembic migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from connectors.checkpoints import metadata as connector_metadata
from genealogy.store import GenealogyStore
from genealogy.tables import metadata as genealogy_metadata


def test_migrations_match_the_declared_tables(
    store_url: str, store_factory: Callable[[str], GenealogyStore]
) -> None:
    store = store_factory(store_url)  # runs every migration
    declared = MetaData()
    for source in (genealogy_metadata, connector_metadata):
        for table in source.tables.values():
            table.to_metadata(declared)
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), declared)
    assert differences == []
