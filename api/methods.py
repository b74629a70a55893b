"""Which methods a path takes: OPTIONS answers them, and a 405 names them all.

Starlette answers OPTIONS with 405, and its 405 names only the methods of the first route matching the path
(`/v1/jobs` said `Allow: POST` though GET works too). CORS preflights never get here: the CORS middleware, outside
the routes, answers them.
"""

from __future__ import annotations

from fastapi import Request
from starlette.routing import Match

CANDIDATES = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path, plus HEAD beside GET and OPTIONS; empty when none matches.

    Asked of each route through `matches`, once per method: the public contract, whatever a route nests inside.
    """
    methods = {
        method
        for method in CANDIDATES
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.router.routes
        )
    }
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods | {"OPTIONS"})
