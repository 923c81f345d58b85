"""Printing: the shape-annotated listing str(graph), graph.to_dot(), and gc.show(tensor)."""

from __future__ import annotations

import inspect
import re

import numpy as np

import graphc as gc
from graphc.graph import MAX_INLINE_CONSTANT

FILE = "test_printing.py"


def this_line() -> int:
    """Return the caller's current line number."""
    return inspect.currentframe().f_back.f_lineno


def mlp_graph():
    """Return (graph, lines) of a small MLP with a named hidden value and a variable update."""
    x = gc.input("x", ("B", 784))
    w1 = gc.Variable(np.zeros((784, 256), np.float32), name="W1")
    w2 = gc.Variable(np.zeros((256, 10), np.float32), name="W2")
    lines = {"h1": this_line() + 1}
    h1 = (x @ w1).named("h1")
    lines["relu"] = this_line() + 1
    h = h1.relu()
    lines["logits"] = this_line() + 1
    logits = (h @ w2).named("logits")
    lines["update"] = this_line() + 1
    new_w1 = w1 * 0.5
    graph = gc.Graph((x.node,), (logits.node,), ((w1.node, new_w1.node),))
    return graph, lines


def test_listing_starts_with_inputs_and_their_types():
    graph, _ = mlp_graph()
    text = str(graph)
    lines = text.splitlines()
    assert lines[0].startswith("graph(")
    # the first value line is the input, with its type and symbolic dim by name
    assert re.fullmatch(r"\s*%x : f32\[B,784\],?", lines[1]), lines[1]
    input_at = text.index("%x : f32[B,784]")
    assert input_at < text.index("matmul")


def test_listing_shows_variables_with_types_before_nodes():
    graph, _ = mlp_graph()
    text = str(graph)
    assert re.search(r"%W1 : f32\[784,256\]", text)
    assert re.search(r"%W2 : f32\[256,10\]", text)
    assert text.index("%W1 : f32[784,256]") < text.index("= matmul(")


def test_listing_node_lines_carry_type_and_user_location():
    graph, lines = mlp_graph()
    text = str(graph)
    h1_line = f"%h1 = matmul(%x, %W1) : f32[B,256]  # {FILE}:{lines['h1']}"
    assert h1_line in text, text
    logits = re.search(r"%logits = matmul\((%\w+), %W2\) : f32\[B,10\]  # (\S+)", text)
    assert logits, text
    assert logits.group(2) == f"{FILE}:{lines['logits']}"
    # relu's nodes point at the line that called relu()
    relu_lines = [line for line in text.splitlines() if f"{FILE}:{lines['relu']}" in line]
    assert relu_lines, text
    assert any(": f32[B,256]" in line for line in relu_lines)


def test_every_node_line_has_the_expected_shape():
    graph, _ = mlp_graph()
    pattern = re.compile(r"^\s*%\w+ = .* : (f32|f64|i32|i64|bool)\[[^\]]*\](  # \S+:\d+)?$")
    node_lines = [line for line in str(graph).splitlines() if " = " in line]
    assert len(node_lines) >= 4
    for line in node_lines:
        assert pattern.match(line), line


def test_listing_ends_with_outputs_then_updates():
    graph, lines = mlp_graph()
    text_lines = str(graph).splitlines()
    assert text_lines[-1] == "}"
    body = [line.strip() for line in text_lines]
    returns = [i for i, line in enumerate(body) if line.startswith("return ")]
    assert len(returns) == 1
    assert body[returns[0]] == "return %logits"
    last_node = max(i for i, line in enumerate(body) if " = " in line)
    assert returns[0] > last_node
    update = [line for line in body if line.startswith("update ")]
    assert len(update) == 1
    match = re.fullmatch(r"update %W1 <- (%\w+)", update[0])
    assert match, update
    defining = [line for line in body if line.startswith(match.group(1) + " = ")]
    assert len(defining) == 1
    assert "mul(%W1," in defining[0]
    assert f"{FILE}:{lines['update']}" in defining[0]


def test_several_outputs_are_listed_in_order():
    x = gc.input("x", (3,))
    a = (x + 1).named("a")
    b = (x * 2).named("b")
    text = str(gc.Graph((x.node,), (b.node, a.node)))
    assert "return %b, %a" in text


def test_symbolic_dims_print_by_name():
    x = gc.input("x", ("B", 5, 2))
    y = x.reshape(-1, 2).named("rows")
    z = x.flatten(1).named("flat")
    text = str(gc.Graph((x.node,), (y.node, z.node)))
    assert "%x : f32[B,5,2]" in text
    assert re.search(r"%rows = reshape\(%x\).* : f32\[B\*5,2\]", text), text
    assert re.search(r"%flat = reshape\(%x\).* : f32\[B,10\]", text), text


def test_small_constants_inline_large_constants_elided():
    small = gc.tensor([1.5, 2.5]).named("small")
    values = np.arange(1000, 1000 + 10 * MAX_INLINE_CONSTANT, dtype=np.float32)
    large = gc.tensor(values).named("large")
    text = str(gc.Graph((), (small.node, large.node)))
    small_line = next(line for line in text.splitlines() if "%small =" in line)
    assert "1.5" in small_line and "2.5" in small_line
    assert ": f32[2]" in small_line
    large_line = next(line for line in text.splitlines() if "%large =" in line)
    assert f": f32[{values.size}]" in large_line
    assert "1000" not in large_line and "1005" not in large_line
    assert len(large_line) < 120
    assert "elided" in large_line or "..." in large_line


def test_attributes_are_printed():
    x = gc.input("x", ("B", 3, 4))
    y = x.sum(dim=1).named("s")
    p = x.permute(2, 0, 1).named("p")
    text = str(gc.Graph((x.node,), (y.node, p.node)))
    s_line = next(line for line in text.splitlines() if "%s =" in line)
    assert "reduce_sum(%x)" in s_line
    assert "(1,)" in s_line
    assert ": f32[B,4]" in s_line
    p_line = next(line for line in text.splitlines() if "%p =" in line)
    assert "(2, 0, 1)" in p_line
    assert ": f32[4,B,3]" in p_line


def test_function_graph_prints():
    x = gc.input("x", ("B", 4))
    y = (x * 2).sum(dim=1)
    f = gc.compile([x], [y])
    text = str(f.graph)
    assert "%x : f32[B,4]" in text
    assert "reduce_sum" in text
    assert ": f32[B]" in text
    assert "return" in text


def test_duplicate_names_are_made_unique():
    x = gc.input("x", (2,))
    a = (x + 1).named("v")
    b = (a * 2).named("v")
    text = str(gc.Graph((x.node,), (b.node,)))
    names = re.findall(r"^\s*(%\w+) = ", text, flags=re.MULTILINE)
    assert len(names) == len(set(names))


# -- DOT --------------------------------------------------------------------------------------


def parse_dot(text: str):
    """Return (node ids, edges as (src, dst, label)) from graphc's DOT, checking its framing."""
    lines = [line.strip() for line in text.strip().splitlines()]
    assert re.fullmatch(r"digraph \w* ?\{", lines[0]), lines[0]
    assert lines[-1] == "}"
    assert text.count("{") == text.count("}")
    nodes, edges = {}, []
    for line in lines[1:-1]:
        edge = re.fullmatch(r'(\w+) -> (\w+) \[label="((?:[^"\\]|\\.)*)"\];', line)
        node = re.fullmatch(r'(\w+) \[label="((?:[^"\\]|\\.)*)"(?:, [\w=]+)*\];', line)
        if edge:
            edges.append(edge.groups())
        elif node:
            nodes[node.group(1)] = node.group(2)
        else:
            assert re.fullmatch(r"[\w ]+(\[.*\])?;|\w+=\w+;", line), line
    return nodes, edges


def test_to_dot_is_valid_looking_with_shapes_on_edges():
    graph, _ = mlp_graph()
    dot = graph.to_dot()
    nodes, edges = parse_dot(dot)
    for source, target, _ in edges:
        assert source in nodes and target in nodes
    labels = {label for _, _, label in edges}
    assert "f32[B,784]" in labels
    assert "f32[784,256]" in labels
    assert "f32[B,256]" in labels
    assert "f32[B,10]" in labels
    # one edge per (node, input) pair in the graph, plus the output edges
    input_edges = sum(len(n.inputs) for n in graph.nodes)
    assert len(edges) >= input_edges
    node_labels = " ".join(nodes.values())
    assert "matmul" in node_labels
    assert "%h1" in node_labels


def test_to_dot_labels_use_dot_line_breaks():
    x = gc.input("x", (2,))
    dot = gc.Graph((x.node,), ((x + 1).node,)).to_dot()
    # a DOT line break inside a label is the two characters backslash-n; an escaped
    # backslash followed by n would print a literal "\n" in the picture
    assert "\\\\n" not in dot, dot
    assert re.search(r'label="%x\\ninput"', dot), dot


def test_to_dot_edge_labels_match_source_types():
    x = gc.input("x", ("B", 3))
    y = (x.sum(dim=1, keepdim=True) * x).named("y")
    graph = gc.Graph((x.node,), (y.node,))
    nodes, edges = parse_dot(graph.to_dot())
    by_id = {f"n{n.id}": n for n in graph.nodes}
    for source, target, label in edges:
        if source in by_id and target in by_id:
            assert label == str(by_id[source].type)


# -- gc.show ---------------------------------------------------------------------------------


def test_show_prints_the_subgraph_of_a_tensor(capsys):
    x = gc.input("x", ("B", 784))
    w = gc.Variable(np.zeros((784, 10), np.float32), name="W")
    line = this_line() + 1
    y = x @ w
    unrelated = gc.tensor([5.0]).named("unrelated")
    gc.show(y)
    out = capsys.readouterr().out
    assert "%x : f32[B,784]" in out
    assert "%W : f32[784,10]" in out
    assert re.search(rf"= matmul\(%x, %W\) : f32\[B,10\]  # {FILE}:{line}", out), out
    assert "unrelated" not in out
    assert unrelated.shape == (1,)
    assert "return" in out


def test_show_of_a_constant_expression(capsys):
    t = gc.arange(6).reshape(2, 3).sum(dim=0)
    gc.show(t)
    out = capsys.readouterr().out
    assert "reduce_sum" in out
    assert ": i64[3]" in out
    assert FILE in out
