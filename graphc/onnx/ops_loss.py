"""Converters of ONNX's loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both are graphc's nll_loss (`nn.functional`), whose meaning is ONNX's: a target equal to
ignore_index contributes 0, and 'mean' divides by the total weight of the targets not ignored.
Without ignore_index every target must be a class, so nll_loss's default (-100) ignores none.
"""

from __future__ import annotations

import graphc as gc
from graphc.nn import functional as F
from graphc.onnx.nodes import NodeContext, converter

_NO_IGNORED_CLASS = -100


def _nll(node: NodeContext, log_prob: gc.Tensor) -> gc.Tensor:
    """Return the node's reduced negative log-likelihood of its targets (input 1) under
    log_prob (N, C, d1, ...), weighted by input 2 where given."""
    reduction = node.require("reduction", ("none", "sum", "mean"), "mean", "none, sum or mean")
    ignore_index = node.attr("ignore_index", _NO_IGNORED_CLASS)
    if log_prob.ndim < 2:
        raise node.error(f"the input needs dims (N, C, ...), got {log_prob.ndim}-d")
    return F.nll_loss(log_prob, node.tensor(1), node.optional(2), ignore_index, reduction)


@converter("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(node: NodeContext) -> gc.Tensor:
    """-input[n, target[n, d...], d...] * weight[target], reduced as `reduction` says."""
    return _nll(node, node.tensor(0))


@converter("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(node: NodeContext) -> tuple[gc.Tensor, gc.Tensor]:
    """The NLL of the targets under log_softmax(scores) over the class dim 1, and that
    log_softmax (the optional second output)."""
    scores = node.tensor(0)
    if scores.ndim < 2:
        raise node.error(f"the scores need dims (N, C, ...), got {scores.ndim}-d")
    log_prob = scores.log_softmax(1)
    return _nll(node, log_prob), log_prob
