"""Infrastructure the layers above share: settings, the database engine, object storage, image ingest and
thumbnails, the Temporal connection, the event bus, logs, metrics, traces and the SSRF guard. No SQL of any table
lives here (that is `store/`)."""
