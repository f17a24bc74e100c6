"""Rasa's SQL tracker store, made to fail loudly when PostgreSQL is unreachable.

Rasa wraps every tracker store in a FailSafeTrackerStore that, on any Exception, carries on
with an empty in-memory conversation: with the database down, a citizen halfway through a
verification would silently be treated as new, and their turns kept in one process's memory.
This store raises TrackerStoreUnavailable instead, deliberately not an Exception so that the
wrapper lets it through; the channels answer "layanan sedang gangguan" and the conversation
continues where it was once the database is back. It also pings pooled connections before
use, so the first turn after a database restart does not fail on a connection the restart broke.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.orm
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs


class TrackerStoreUnavailable(BaseException):
    """The conversation could not be read or saved; nothing of this turn was processed or kept."""


class StrictSQLTrackerStore(SQLTrackerStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.engine.url
        self.engine.dispose()
        self.engine = sa.create_engine(url, pool_pre_ping=True, **create_engine_kwargs(url))
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    async def retrieve(self, sender_id):
        try:
            return await super().retrieve(sender_id)
        except sqlalchemy.exc.DBAPIError as exc:
            raise TrackerStoreUnavailable(type(exc).__name__) from exc

    async def retrieve_full_tracker(self, sender_id):
        try:
            return await super().retrieve_full_tracker(sender_id)
        except sqlalchemy.exc.DBAPIError as exc:
            raise TrackerStoreUnavailable(type(exc).__name__) from exc

    async def save(self, tracker) -> None:
        try:
            await super().save(tracker)
        except sqlalchemy.exc.DBAPIError as exc:
            raise TrackerStoreUnavailable(type(exc).__name__) from exc
