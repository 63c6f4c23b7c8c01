"""Alembic migrations of the contact-center schema, run with ``contact-center migrate``."""
