"""Durable connector checkpoints, kept in the hub database.

The table belongs to the connectors (the genealogy store never reads it); its
migration lives with the hub's others so one ``lothub db upgrade`` creates it.

Example::

    checkpoints = CheckpointStore.connect(settings.store_url)
    checkpoints.save("wms-alp", cursor.to_json(), next_sequence=1201)
    checkpoints.load("wms-alp")
    checkpoints.load_sequence("wms-alp")
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from schemas.errors import RetriableError

metadata = MetaData()
connector_checkpoints = Table(
    "connector_checkpoints",
    metadata,
    Column("connector", String(200), primary_key=True),
    Column("position", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=True),
    #: the sequence number of the first event after ``position`` (densely numbering sources)
    Column("next_sequence", BigInteger, nullable=True),
)


class CheckpointUnavailableError(RetriableError):
    """The hub database did not answer; the batch is re-read after a pause."""


class CheckpointStore:
    """Load and save one position per connector."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def connect(cls, url: str) -> CheckpointStore:
        """Open the checkpoint table in the hub database at ``url``."""
        return cls(create_engine(url))

    def load(self, connector: str) -> str | None:
        """The stored position (JSON) of ``connector``, or None."""
        value = self._read(connector, connector_checkpoints.c.position)
        return None if value is None else str(value)

    def load_sequence(self, connector: str) -> int | None:
        """The sequence number the event after the stored position gets, or None."""
        value = self._read(connector, connector_checkpoints.c.next_sequence)
        return None if value is None else int(value)

    def _read(self, connector: str, column: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(column).where(connector_checkpoints.c.connector == connector)
                ).scalar()
        except SQLAlchemyError as exc:
            raise CheckpointUnavailableError(
                f"cannot read checkpoint of {connector}: {exc}"
            ) from exc

    def save(self, connector: str, position: str, next_sequence: int | None = None) -> None:
        """Store ``position`` for ``connector`` (call only after the broker acknowledged).

        ``next_sequence`` is the number of the first event after ``position``, for a
        source that numbers its events densely (None for the others).
        """
        self._upsert({"connector": connector, "position": position,
                      "next_sequence": next_sequence, "updated_at": datetime.now(UTC)},
                     ("position", "next_sequence", "updated_at"))  # fmt: skip

    def _upsert(self, row: dict[str, object], columns: tuple[str, ...]) -> None:
        try:
            with self.engine.begin() as conn:
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                ins = dialect.insert(connector_checkpoints)
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["connector"], set_={c: ins.excluded[c] for c in columns}
                    ),
                    [row],
                )
        except SQLAlchemyError as exc:
            raise CheckpointUnavailableError(
                f"cannot save state of {row['connector']}: {exc}"
            ) from exc

    def save_status(self, connector: str, status: str) -> None:
        """Store the connector's latest status (JSON) for ``lothub connectors status``."""
        self._upsert({"connector": connector, "status": status,
                      "updated_at": datetime.now(UTC)}, ("status", "updated_at"))  # fmt: skip

    def statuses(self) -> dict[str, tuple[str | None, str | None]]:
        """Every connector's ``(position, status)`` JSON as stored."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(connector_checkpoints)).all()
        except SQLAlchemyError as exc:
            raise CheckpointUnavailableError(f"cannot read connector status: {exc}") from exc
        return {r.connector: (r.position, r.status) for r in rows}

    def reset(self, connector: str) -> None:
        """Forget the checkpoint (a backfill re-reads from the start it is given)."""
        with self.engine.begin() as conn:
            conn.execute(
                connector_checkpoints.delete().where(connector_checkpoints.c.connector == connector)
            )

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
