"""The rewrite engine: named rewrites grouped in tiers, each tier run to a fixed point.

A `Rewrite` looks at one node, whose inputs are already rewritten, and returns its
replacement, or None where it does not apply. A `GraphRewrite` transforms a whole graph (CSE,
dropping no-op updates) and says how often it fired. A `Tier` is a named, ordered group of
them, in the spirit of PyTensor's optdb: `run_tier` walks the graph with the tier's rewrites
until a walk fires nothing, and `run_tiers` runs the tiers in order, again and again, until
every tier is at its fixed point on the same graph, so `optimize(optimize(g))` is
`optimize(g)`. A tier that still fires after `MAX_WALKS` walks, or tiers that keep re-enabling
each other for `MAX_ROUNDS` rounds, are a bug in the rewrites: `CompileError` names the tier and
the rewrites that kept firing. A `RewriteReport` records, per tier, what fired and how often.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from graphc.errors import CompileError
from graphc.graph import Graph, Node

# rule(node with already-rewritten inputs) -> replacement node (or the node itself).
Rule = Callable[[Node], Node]

# More walks than any terminating set of rewrites needs on a real graph: rewrites see their
# inputs already rewritten, so most tiers settle in two walks (one that fires, one that checks).
MAX_WALKS = 100
MAX_ROUNDS = 10


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    """Return node with new inputs (the same node if they did not change)."""
    if all(a is b for a, b in zip(inputs, node.inputs, strict=True)):
        return node
    return Node(node.op, inputs, node.attrs, node.type, node.location, node.name)


def rewrite(graph: Graph, rule: Rule, replacements: Mapping[int, Node] | None = None) -> Graph:
    """Return the graph with rule applied to every node, inputs before their users, and the
    nodes whose ids replacements names replaced outright (their inputs are no longer read).

    The graph itself comes back when nothing changed.
    """
    # Only the nodes that changed, directly or through their inputs.
    replaced: dict[int, Node] = dict(replacements or {})
    for node in graph.nodes:
        if node.id in replaced:
            continue
        current = node
        if replaced and any(source.id in replaced for source in node.inputs):
            inputs = tuple(replaced.get(source.id, source) for source in node.inputs)
            current = Node(node.op, inputs, node.attrs, node.type, node.location, node.name)
        result = rule(current)
        if result is not node:
            replaced[node.id] = result
    if not replaced:
        return graph

    def new(node: Node) -> Node:
        return replaced.get(node.id, node)

    updates = tuple((new(v), new(value)) for v, value in graph.updates)
    return Graph(tuple(map(new, graph.inputs)), tuple(map(new, graph.outputs)), updates)


def substitute(graph: Graph, replacements: Mapping[int, Node]) -> Graph:
    """Return graph with the nodes whose ids replacements names replaced by its nodes."""
    return rewrite(graph, lambda node: node, replacements)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A named local rewrite: apply(node) returns the node's replacement, or None.

    ops names the ops whose nodes it looks at (None: every node), so a walk skips the rest.
    """

    name: str
    apply: Callable[[Node], Node | None]
    ops: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class GraphRewrite:
    """A named whole-graph rewrite: apply(graph) returns the new graph and how often it fired."""

    name: str
    apply: Callable[[Graph], tuple[Graph, int]]


def node_rewrite(*ops: str) -> Callable[[Callable[[Node], Node | None]], Rewrite]:
    """Decorate a function node -> replacement or None as a Rewrite named after it, applied to
    nodes of the given ops (no ops: every node)."""

    def define(function: Callable[[Node], Node | None]) -> Rewrite:
        return Rewrite(function.__name__, function, frozenset(ops) if ops else None)

    return define


@dataclass(frozen=True, slots=True)
class Tier:
    """A named group of rewrites, tried in order, that runs until a walk fires none of them."""

    name: str
    rewrites: tuple[Rewrite | GraphRewrite, ...]


@dataclass
class RewriteReport:
    """What the tiers did: per tier, how often each rewrite fired, the walks and the time."""

    fired: dict[str, Counter[str]] = field(default_factory=dict)
    walks: Counter[str] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def record(self, tier: str, fired: Counter[str], seconds: float) -> None:
        """Add one walk of a tier."""
        self.fired.setdefault(tier, Counter()).update(fired)
        self.walks[tier] += 1
        self.seconds[tier] += seconds

    def __str__(self) -> str:
        lines = ["rewrites by tier:"]
        for tier, fired in self.fired.items():
            counts = ", ".join(f"{name} x{n}" for name, n in fired.most_common())
            walks = self.walks[tier]
            timing = f"{walks} walk{'s' * (walks != 1)}, {self.seconds[tier] * 1e3:.1f} ms"
            lines.append(f"  {tier}: {counts or 'nothing fired'} ({timing})")
        return "\n".join(lines)


def walk(tier: Tier, graph: Graph) -> tuple[Graph, Counter[str]]:
    """Return the graph after one walk of the tier's rewrites, and how often each fired."""
    fired: Counter[str] = Counter()
    local = [r for r in tier.rewrites if isinstance(r, Rewrite)]
    by_op: dict[str, list[Rewrite]] = {}

    def rule(node: Node) -> Node:
        if node.op not in by_op:
            by_op[node.op] = [r for r in local if r.ops is None or node.op in r.ops]
        for candidate in by_op[node.op]:
            replacement = candidate.apply(node)
            if replacement is not None and replacement is not node:
                fired[candidate.name] += 1
                return replacement
        return node

    if local:
        graph = rewrite(graph, rule)
    for candidate in tier.rewrites:
        if isinstance(candidate, GraphRewrite):
            graph, count = candidate.apply(graph)
            if count:
                fired[candidate.name] += count
    return graph, fired


def run_tier(
    tier: Tier, graph: Graph, report: RewriteReport | None = None
) -> tuple[Graph, Counter[str]]:
    """Return the graph with the tier run until a walk fires nothing, and what fired in all."""
    total: Counter[str] = Counter()
    for _ in range(MAX_WALKS):
        start = time.perf_counter()
        graph, fired = walk(tier, graph)
        if report is not None:
            report.record(tier.name, fired, time.perf_counter() - start)
        if not fired:
            return graph, total
        total.update(fired)
    still = ", ".join(f"{name} x{n}" for name, n in fired.most_common())
    raise CompileError(
        f"optimize: tier {tier.name!r} did not reach a fixed point in {MAX_WALKS} walks; "
        f"these rewrites kept firing: {still}"
    )


def run_tiers(graph: Graph, tiers: Sequence[Tier], report: RewriteReport | None = None) -> Graph:
    """Return the graph with the tiers run in order, repeated until none of them fires.

    A tier that fired ends at its own fixed point, so the sequence stops once every other tier
    has run after it without firing.
    """
    settled = 0  # tiers, counting back from the last one run, at a fixed point on this graph
    last_fired: dict[str, Counter[str]] = {}
    for step in range(MAX_ROUNDS * len(tiers)):
        if settled == len(tiers):
            return graph
        tier = tiers[step % len(tiers)]
        graph, fired = run_tier(tier, graph, report)
        settled = 1 if fired else settled + 1
        if fired:
            last_fired[tier.name] = fired
    if settled == len(tiers):
        return graph
    still = "; ".join(
        f"{name}: {', '.join(f'{rewrite} x{n}' for rewrite, n in fired.most_common())}"
        for name, fired in last_fired.items()
    )
    raise CompileError(
        f"optimize: the tiers kept re-enabling each other for {MAX_ROUNDS} rounds; "
        f"these rewrites kept firing: {still}"
    )
