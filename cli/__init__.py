"""`imagejobs`: run the whole stack on one machine, run its production processes, start and follow image jobs.

    imagejobs dev                          embedded Temporal + PostgreSQL, migrations, worker and API until Ctrl-C
    imagejobs generate "a lighthouse"      start a job through the API, show its progress, print the image URL
    imagejobs watch <jobId>                follow a job that is already running
    imagejobs api | worker | migrate       the production processes (settings come from the environment)

Commands import the application lazily, so `generate` and `watch` start in a blink and need only httpx.
"""
