"""The SQL of each table family, one module per family: `runs`, `run_events`, `canvas_nodes`, `canvases`,
`canvas_runs`, `deliveries` (provider webhooks taken, refused and still to signal), `outbound` (your endpoints and
their deliveries), `pacing`, `model_lists`, `budget` and `stats` (read-only figures). `jsonb` refuses image data
in any JSON column. Every function takes the session first and the rest by keyword."""
