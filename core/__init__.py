"""Shared infrastructure: settings, database, object storage, Temporal connection, event bus."""
