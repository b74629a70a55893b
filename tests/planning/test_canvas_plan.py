"""The canvas-run planner on its own (no HTTP, no database): order, selection, refusals, hashes and node names."""

from __future__ import annotations

import pytest

from planning.canvas_plan import GraphRefused, content_hash, input_key, prompt_name, run_graph


def test_upstream_nodes_come_first_and_each_node_knows_what_it_refines() -> None:
    graph = run_graph(["c", "b", "a"], [("a", "b"), ("b", "c")])
    assert graph.order == ["a", "b", "c"]
    assert graph.upstream == {"a": None, "b": "a", "c": "b"}


def test_independent_nodes_keep_the_boards_order() -> None:
    graph = run_graph(["x", "y", "z"], [])
    assert graph.order == ["x", "y", "z"]


def test_edges_from_outside_the_image_nodes_are_inputs_not_run_nodes() -> None:
    # An uploaded image feeding a node: the node refines it, and the upload is not part of the run.
    graph = run_graph(["gen"], [("upload", "gen")])
    assert graph.order == ["gen"] and graph.upstream == {"gen": "upload"}


def test_from_node_takes_that_node_and_everything_below_it_only() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "d"), ("x", "y")]
    graph = run_graph(["a", "b", "c", "d", "x", "y"], edges, from_node="b")
    assert graph.order == ["b", "c"]
    assert graph.upstream == {"b": "a", "c": "b"}


def test_node_ids_choose_exactly_those_nodes_and_narrow_from_node() -> None:
    edges = [("a", "b"), ("b", "c")]
    assert run_graph(["a", "b", "c"], edges, node_ids=["c", "a"]).order == ["a", "c"]
    assert run_graph(["a", "b", "c"], edges, node_ids=["c"], from_node="b").order == ["c"]


def test_a_node_fed_by_two_edges_is_refused_naming_it() -> None:
    with pytest.raises(GraphRefused) as refused:
        run_graph(["a", "b", "c"], [("a", "c"), ("b", "c")])
    assert (refused.value.code, refused.value.nodes) == ("too_many_inputs", ["c"])
    assert refused.value.message == "A node refines one image; these have more than one edge in: c."


def test_a_cycle_is_refused_naming_its_nodes_in_edge_order_from_the_first_by_name() -> None:
    with pytest.raises(GraphRefused) as refused:
        run_graph(["q", "p", "r", "free"], [("p", "q"), ("q", "r"), ("r", "p")])
    assert (refused.value.code, refused.value.nodes) == ("cycle", ["p", "q", "r"])
    assert refused.value.message == "The board's edges make a cycle: p -> q -> r -> p."


def test_unknown_nodes_are_refused_and_a_refusal_can_name_nodes_by_their_prompts() -> None:
    with pytest.raises(GraphRefused) as refused:
        run_graph(["a"], [], node_ids=["ghost"], from_node="phantom")
    assert (refused.value.code, refused.value.nodes) == ("unknown_node", ["ghost", "phantom"])
    prompts = {"ghost": "a ghost ship at night", "phantom": ""}
    named = refused.value.describe(lambda node: prompt_name(prompts[node], node))
    assert named == "No image node “a ghost ship at night”, phantom on this board."


def test_the_content_hash_is_stable_and_moves_with_any_setting_or_the_input() -> None:
    settings = {"provider": "local", "model": "procedural", "prompt": "a barn", "seed": 7}
    same = content_hash(dict(reversed(list(settings.items()))), None)  # key order does not matter
    assert content_hash(settings, None) == same and len(same) == 64
    assert content_hash({**settings, "seed": 8}, None) != same
    assert content_hash(settings, "https://files.test/in.png") != same


def test_an_input_made_by_this_canvas_stands_for_its_jobs_hash_else_for_its_url() -> None:
    made_from = {"https://files.test/a.png": "hash-of-a"}
    assert input_key("https://files.test/a.png", made_from) == "hash-of-a"
    assert input_key("https://elsewhere.test/b.png", made_from) == "https://elsewhere.test/b.png"
    assert input_key(None, made_from) is None


def test_a_node_is_named_by_its_prompts_first_six_words() -> None:
    assert prompt_name("  a lighthouse at dusk  ", "n1") == "“a lighthouse at dusk”"
    assert prompt_name("one two three four five six seven", "n1") == "“one two three four five six…”"
    assert prompt_name("   ", "node-7") == "node-7"
