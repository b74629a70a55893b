"""The graph of a canvas run, worked out before anything starts: which image nodes run, in what order, what each
refines, and what its inputs hash to.

An edge A -> B between image nodes means B refines A's image. Every node takes at most one image in; a cycle, or a
node fed by two, is refused with the nodes named. A node's content hash covers its generation settings, provider,
model and its input image (an upstream node's hash, or the URL of an image from outside the run), so a change
anywhere upstream changes every hash below it, and an unchanged node keeps its hash from run to run.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RUN_NODES", "GraphRefused", "RunGraph", "content_hash", "input_key", "prompt_name", "run_graph"]

# The most nodes one run takes; it keeps the run's workflow history far inside Temporal's limits.
MAX_RUN_NODES = 500


# What each refusal says, given the names of the nodes concerned (a caller may name them by their prompts).
_REFUSALS: dict[str, Callable[[list[str]], str]] = {
    "too_many_inputs": lambda names: f"A node refines one image; these have more than one edge in: {', '.join(names)}.",
    "cycle": lambda names: f"The board's edges make a cycle: {' -> '.join([*names, names[0]])}.",
    "unknown_node": lambda names: f"No image node {', '.join(names)} on this board.",
}


class GraphRefused(ValueError):
    """The board cannot run as asked; `code` is the API's error code and `nodes` the culprits."""

    def __init__(self, code: str, nodes: Sequence[str]) -> None:
        self.code = code
        self.nodes = list(nodes)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return self.describe(str)

    def describe(self, name: Callable[[str], str]) -> str:
        """The refusal in a sentence, each node called `name(node_id)`."""
        return _REFUSALS[self.code]([name(node) for node in self.nodes])


@dataclass(frozen=True)
class RunGraph:
    """The nodes to run, upstream before downstream, and the node each one refines (None: starts from text or
    from an image outside the run)."""

    order: list[str]
    upstream: dict[str, str | None]


def run_graph(
    image_nodes: Sequence[str],
    edges: Iterable[tuple[str, str]],
    *,
    node_ids: Sequence[str] | None = None,
    from_node: str | None = None,
) -> RunGraph:
    """The part of the board a run covers: every image node, only `node_ids`, or `from_node` and all below it."""
    runnable = set(image_nodes)
    inputs: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        if target in runnable:
            inputs[target].append(source)
    fed_twice = sorted(node for node, sources in inputs.items() if len(sources) > 1)
    if fed_twice:
        raise GraphRefused("too_many_inputs", fed_twice)
    upstream = {node: (inputs[node][0] if inputs[node] else None) for node in image_nodes}
    order = _topological(image_nodes, upstream)
    chosen = _selection(order, upstream, node_ids=node_ids, from_node=from_node)
    return RunGraph(order=[node for node in order if node in chosen], upstream={n: upstream[n] for n in chosen})


def _topological(nodes: Sequence[str], upstream: Mapping[str, str | None]) -> list[str]:
    """Kahn's order over the image nodes; what is left over sits on a cycle (or below one)."""
    children: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(nodes, 0)
    for node in nodes:
        parent = upstream[node]
        if parent in waiting:
            children[parent].append(node)
            waiting[node] = 1
    ready = deque(node for node in nodes if waiting[node] == 0)
    order: list[str] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for child in children[node]:
            waiting[child] = 0
            ready.append(child)
    if len(order) < len(nodes):
        raise GraphRefused("cycle", _cycle(set(nodes) - set(order), upstream))
    return order


def _cycle(stuck: set[str], upstream: Mapping[str, str | None]) -> list[str]:
    """The nodes of one cycle among those Kahn's order could not place, in edge order."""
    node = min(stuck)
    seen: list[str] = []
    while node not in seen:
        seen.append(node)
        parent = upstream[node]
        assert parent is not None
        node = parent
    cycle = seen[seen.index(node) :]
    cycle.reverse()  # walked against the edges; report them as drawn, from the first node by name
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def _selection(
    order: Sequence[str],
    upstream: Mapping[str, str | None],
    *,
    node_ids: Sequence[str] | None,
    from_node: str | None,
) -> set[str]:
    known = set(order)
    asked = [*(node_ids or []), *([from_node] if from_node else [])]
    unknown = [node for node in asked if node not in known]
    if unknown:
        raise GraphRefused("unknown_node", unknown)
    if from_node:
        chosen = {from_node}
        for node in order:  # upstream first, so one pass finds every descendant
            if upstream[node] in chosen:
                chosen.add(node)
        return chosen & set(node_ids) if node_ids else chosen
    return set(node_ids) if node_ids else known


def content_hash(settings: Mapping[str, Any], input_image: str | None) -> str:
    """What a job is made from, however it is started (Generate, the API, the CLI, a canvas run): its provider,
    model and prompt settings, and its input image's key (`input_key`)."""
    canonical = json.dumps({"settings": settings, "input": input_image}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def input_key(image_url: str | None, made_from: Mapping[str, str]) -> str | None:
    """What stands for an input image in a hash: the content hash of the job that made it, when this canvas' jobs
    did (`made_from`: image URL -> its job's hash), so an image regenerated from the same inputs keeps the same key;
    else its URL."""
    if image_url is None:
        return None
    return made_from.get(image_url, image_url)


# How many of a prompt's words name its node in messages.
NAME_WORDS = 6


def prompt_name(prompt: str, fallback: str) -> str:
    """How messages name a node: its prompt's first words in quotes (people know their nodes by what they draw,
    not by their ids), else `fallback`."""
    words = prompt.split()
    if not words:
        return fallback
    return f"“{' '.join(words[:NAME_WORDS])}{'…' if len(words) > NAME_WORDS else ''}”"
