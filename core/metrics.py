"""Prometheus metrics: each is declared once, here, and served by the API at GET /metrics.

Names follow Prometheus' conventions (base units, `_total` for counters), and labels never hold ids or anything
a caller chooses freely: a label value comes from a fixed set (the providers this process knows, an outcome).
"""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS = Counter(
    "imagejobs_webhooks",
    "Provider webhook deliveries by what became of them. `result`: accepted, duplicate, ignored (the job had"
    " ended), forged (the URL's token does not hold: nothing is stored), refused (authentic URL, but a bad"
    " signature, no such job or another job's provider job: kept in GET /v1/webhooks/refusals).",
    ["provider", "result"],
)
