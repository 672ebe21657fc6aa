"""Alembic migrations of the store schema (run by ``ivr.store.migrate.upgrade``)."""
