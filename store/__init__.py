"""The SQL of each table family, one module per family: `runs` (runs, their events and canvas nodes), `canvases`,
`canvas_runs`, `deliveries` (provider webhooks taken, refused and still to signal), `outbound` (your endpoints and
their deliveries), `pacing`, `model_lists` and `budget`. Functions take the session first; what they change or read
is named by keyword."""
