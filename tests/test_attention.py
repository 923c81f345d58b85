"""F.scaled_dot_product_attention, nn.MultiheadAttention and the Transformer encoder and
decoder layers and stacks against torch (its state dicts loaded, eval mode, dropout 0):
outputs, attention weights and every gradient on every backend, with causal, padding, bool
and float masks; input gradients against finite differences; and 20 Adam steps of a 2-layer
causal encoder."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.errors import DTypeError, GraphError, ShapeError
from graphc.testing import check_grad

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_one_thread")
F = gc.nn.functional


def _close(got: np.ndarray, want, rtol: float = 1e-5) -> None:
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def _loss(output):
    """Return a scalar of output whose gradient is not degenerate where a layer norm makes
    sum(output**2) constant."""
    return (output * output * (output + 1)).sum()


def _compare(backend, inputs, build, reference, params=(), torch_params=()):
    """Compile build(*graphc inputs) -> outputs with the gradients of a loss over them, and
    check outputs and gradients (inputs', then params') against reference on torch tensors."""
    arrays = [a for _, a in inputs]
    placeholders = [gc.input(f"in{i}", shape) for i, (shape, _) in enumerate(inputs)]
    outputs = build(*placeholders)
    loss = sum((_loss(o) * (i + 1) for i, o in enumerate(outputs)), gc.tensor(0.0))
    grads = gc.grad(loss, [*placeholders, *params])
    f = gc.compile(placeholders, [*outputs, *grads], backend=backend)
    got = f(*(a.astype(np.float32) for a in arrays))
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    want_outputs = reference(*leaves)
    sum(_loss(o) * (i + 1) for i, o in enumerate(want_outputs)).backward()
    want = [*want_outputs, *(t.grad for t in leaves), *(p.grad for p in torch_params)]
    assert len(got) == len(want)
    for value, expected in zip(got, want, strict=True):
        _close(value, expected)


def _load(model: nn.Module, reference) -> None:
    model.load_state_dict(
        {k: v.detach().numpy().astype(np.float32) for k, v in reference.state_dict().items()}
    )


# -- scaled_dot_product_attention -----------------------------------------------------------
def _masks(rng):
    allowed = rng.random((5, 6)) > 0.4
    allowed[:, 0] = True
    blocked_row = allowed.copy()
    blocked_row[2] = False  # a query that may attend to nothing gets zeros, as in torch
    return {
        "none": {},
        "bool": {"attn_mask": allowed},
        "bool_blocked_row": {"attn_mask": blocked_row},
        "float": {"attn_mask": rng.standard_normal((1, 2, 5, 6))},
        "causal": {"is_causal": True},
        "scale": {"is_causal": True, "scale": 0.3},
    }


@pytest.mark.parametrize("case", list(_masks(np.random.default_rng(0))))
def test_sdpa_matches_torch(backend, rng, case):
    options = _masks(np.random.default_rng(1))[case]
    q, k, v = (rng.standard_normal(s) for s in ((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)))
    mask = options.get("attn_mask")
    ours = dict(options)
    theirs = dict(options)
    if mask is not None:
        ours["attn_mask"] = gc.tensor(mask if mask.dtype == bool else mask.astype(np.float32))
        theirs["attn_mask"] = torch.tensor(mask)
    _compare(
        backend,
        [(("N", 2, 5, 4), q), (("N", 2, 6, 4), k), (("N", 2, 6, 3), v)],
        lambda q, k, v: [F.scaled_dot_product_attention(q, k, v, **ours)],
        lambda q, k, v: [torch.nn.functional.scaled_dot_product_attention(q, k, v, **theirs)],
    )


def test_causal_mask_with_a_symbolic_length(backend, rng):
    x = gc.input("x", (2, "L", 4))
    f = gc.compile([x], [F.scaled_dot_product_attention(x, x, x, is_causal=True)], backend=backend)
    for length in (1, 3, 7):
        a = rng.standard_normal((2, length, 4))
        t = torch.tensor(a)
        want = torch.nn.functional.scaled_dot_product_attention(t, t, t, is_causal=True)
        _close(f(a.astype(np.float32)), want)


def test_sdpa_errors():
    q = gc.zeros((2, 5, 4))
    with pytest.raises(ShapeError, match="query"):
        F.scaled_dot_product_attention(q, gc.zeros((2, 5, 3)), q)
    with pytest.raises(GraphError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=gc.ones((5, 5)), is_causal=True)
    with pytest.raises(DTypeError, match="attn_mask"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=gc.ones((5, 5), dtype=gc.int64))


# -- MultiheadAttention -----------------------------------------------------------------------
MHA_CASES = {
    "self_padding": ({"batch_first": True}, {"padding": True}),
    "cross_float_mask_per_head_weights": (
        {},
        {"cross": True, "float_mask": True, "average_attn_weights": False},
    ),
    "no_bias_bool_mask_3d": ({"bias": False, "batch_first": True}, {"bool_mask_3d": True}),
    "causal_no_weights": ({"batch_first": True}, {"is_causal": True, "need_weights": False}),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_matches_torch(backend, rng, case):
    options, call = MHA_CASES[case]
    reference = torch.nn.MultiheadAttention(8, 2, **options).double().eval()
    model = nn.MultiheadAttention(8, 2, **options).eval()
    _load(model, reference)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    n, length, source = 3, 4, (5 if call.get("cross") else 4)
    batch_first = options.get("batch_first", False)

    def layout(size):
        return (n, size, 8) if batch_first else (size, n, 8)

    arrays = [rng.standard_normal(layout(length))]
    if call.get("cross"):
        arrays += [rng.standard_normal(layout(source)), rng.standard_normal(layout(source))]
    kwargs_ours, kwargs_theirs = {}, {}
    if call.get("padding"):
        padding = np.zeros((n, source), bool)
        padding[0, -2:] = True
        kwargs_ours["key_padding_mask"] = gc.tensor(padding)
        kwargs_theirs["key_padding_mask"] = torch.tensor(padding)
    if call.get("float_mask"):
        mask = rng.standard_normal((length, source))
        kwargs_ours["attn_mask"] = gc.tensor(mask.astype(np.float32))
        kwargs_theirs["attn_mask"] = torch.tensor(mask)
    if call.get("bool_mask_3d"):
        mask = rng.random((n * 2, length, source)) > 0.6
        mask[..., 0] = False
        kwargs_ours["attn_mask"] = gc.tensor(mask)
        kwargs_theirs["attn_mask"] = torch.tensor(mask)
    if call.get("is_causal"):
        kwargs_ours["is_causal"] = True
        # torch needs the mask itself along with the hint
        kwargs_theirs["attn_mask"] = torch.ones(length, length, dtype=bool).triu(1)
        kwargs_theirs["is_causal"] = True
    for key in ("need_weights", "average_attn_weights"):
        if key in call:
            kwargs_ours[key] = kwargs_theirs[key] = call[key]

    def ours(*xs):
        q, k, v = xs if len(xs) == 3 else xs * 3
        out, weights = model(q, k, v, **kwargs_ours)
        return [out] if weights is None else [out, weights]

    def theirs(*xs):
        q, k, v = xs if len(xs) == 3 else xs * 3
        out, weights = reference(q, k, v, **kwargs_theirs)
        return [out] if weights is None else [out, weights]

    # A mask over the batch fixes it; otherwise the batch dim stays symbolic.
    batch = n if "key_padding_mask" in kwargs_ours or call.get("bool_mask_3d") else "N"
    symbolic = [(batch, s, 8) if batch_first else (s, batch, 8) for s in (length, source, source)]
    _compare(
        backend,
        list(zip(symbolic, arrays, strict=False)),
        ours,
        theirs,
        list(model.parameters()),
        list(reference.parameters()),
    )


def test_multihead_attention_unbatched(rng):
    reference = torch.nn.MultiheadAttention(4, 2).double().eval()
    model = nn.MultiheadAttention(4, 2).eval()
    _load(model, reference)
    x = rng.standard_normal((3, 4))
    out, weights = model(
        gc.tensor(x.astype(np.float32)), x.astype(np.float32), x.astype(np.float32)
    )
    t = torch.tensor(x)
    t_out, t_weights = reference(t, t, t)
    _close(out.numpy(), t_out)
    _close(weights.numpy(), t_weights)
    with pytest.raises(ShapeError, match="expects query"):
        model(gc.zeros((3, 2, 5)), gc.zeros((3, 2, 5)), gc.zeros((3, 2, 5)))
    with pytest.raises(GraphError, match="divisible"):
        nn.MultiheadAttention(5, 2)


# -- TransformerEncoderLayer and TransformerEncoder ------------------------------------------
LAYER_CASES = {
    "post_norm_relu_padding": ({}, {"padding": True}),
    "pre_norm_gelu_batch_first_causal": (
        {"norm_first": True, "activation": "gelu", "batch_first": True},
        {"is_causal": True},
    ),
    "float_mask": ({"batch_first": True}, {"float_mask": True}),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_encoder_layer_matches_torch(backend, rng, case):
    options, call = LAYER_CASES[case]
    args = (8, 2)
    reference = torch.nn.TransformerEncoderLayer(*args, 16, dropout=0.0, **options)
    reference = reference.double().eval()
    model = nn.TransformerEncoderLayer(*args, 16, dropout=0.0, **options).eval()
    _load(model, reference)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    batch_first = options.get("batch_first", False)
    n, length = 3, 5
    x = rng.standard_normal((n, length, 8) if batch_first else (length, n, 8))
    ours, theirs = {}, {}
    if call.get("padding"):
        padding = np.zeros((n, length), bool)
        padding[1, -2:] = True
        ours["src_key_padding_mask"] = gc.tensor(padding)
        theirs["src_key_padding_mask"] = torch.tensor(padding)
    if call.get("is_causal"):
        ours["is_causal"] = True  # no mask needed
        theirs["src_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(
            length, dtype=torch.float64
        )
        theirs["is_causal"] = True
    if call.get("float_mask"):
        mask = rng.standard_normal((length, length))
        ours["src_mask"] = gc.tensor(mask.astype(np.float32))
        theirs["src_mask"] = torch.tensor(mask)
    _compare(
        backend,
        # Masks fix the sizes they cover; the causal mask follows a symbolic length.
        [(("N", "L", 8) if call.get("is_causal") else x.shape, x)],
        lambda x: [model(x, **ours)],
        lambda x: [reference(x, **theirs)],
        list(model.parameters()),
        list(reference.parameters()),
    )


@pytest.mark.parametrize("stacked", [False, True], ids=["layer", "two_layer_stack"])
def test_decoder_matches_torch(backend, rng, stacked):
    """Post-norm relu with a causal target and padded memory; pre-norm gelu batch-first with a
    float memory mask, as a 2-layer TransformerDecoder with a final norm."""
    options = {"norm_first": True, "activation": "gelu", "batch_first": True} if stacked else {}
    torch.manual_seed(0)
    t_layer = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, **options)
    layer = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, **options)
    _load(layer, t_layer)
    if stacked:
        reference = torch.nn.TransformerDecoder(t_layer, 2, norm=torch.nn.LayerNorm(8))
        model = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(8))
        _load(model, reference)
    else:
        reference, model = t_layer, layer
    reference = reference.double().eval()
    model.eval()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    n, length, source = 2, 4, 5
    layout = (lambda size: (n, size, 8)) if stacked else (lambda size: (size, n, 8))
    tgt, memory = rng.standard_normal(layout(length)), rng.standard_normal(layout(source))
    if stacked:
        mask = rng.standard_normal((length, source))
        ours = {"memory_mask": gc.tensor(mask.astype(np.float32))}
        theirs = {"memory_mask": torch.tensor(mask)}
    else:
        padding = np.zeros((n, source), bool)
        padding[1, -2:] = True
        ours = {"tgt_is_causal": True, "memory_key_padding_mask": gc.tensor(padding)}
        theirs = {
            "tgt_mask": torch.nn.Transformer.generate_square_subsequent_mask(
                length, dtype=torch.float64
            ),
            "tgt_is_causal": True,
            "memory_key_padding_mask": torch.tensor(padding),
        }
    _compare(
        backend,
        [(tgt.shape, tgt), (memory.shape, memory)],
        lambda tgt, memory: [model(tgt, memory, **ours)],
        lambda tgt, memory: [reference(tgt, memory, **theirs)],
        list(model.parameters()),
        list(reference.parameters()),
    )


def _encoder(lib):
    torch.manual_seed(0)

    class CausalLM(lib.Module):
        """Embedding, a 2-layer causal encoder with a final norm and a readout."""

        def __init__(self):
            super().__init__()
            self.embed = lib.Embedding(7, 8)
            layer = lib.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.encoder = lib.TransformerEncoder(layer, 2, norm=lib.LayerNorm(8))
            self.out = lib.Linear(8, 7)

        def forward(self, tokens, mask):
            return self.out(self.encoder(self.embed(tokens), mask=mask, is_causal=True))

    return CausalLM()


def test_encoder_adam_training_matches_torch(backend):
    data = np.random.default_rng(4)
    batches = [data.integers(0, 7, (3, 6)) for _ in range(3)]
    reference = _encoder(torch.nn)
    model = _encoder(nn)
    _load(model, reference)
    t_opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5)
    want = []
    for step in range(20):
        tokens = torch.from_numpy(batches[step % 3])
        t_opt.zero_grad()
        logits = reference(tokens[:, :-1], mask)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), tokens[:, 1:].reshape(-1))
        loss.backward()
        t_opt.step()
        want.append(loss.item())

    tokens = gc.input("tokens", ("B", "T"), gc.int64)
    logits = model(tokens[:, :-1], None)  # is_causal=True alone masks the future
    loss = F.cross_entropy(logits.reshape(-1, 7), tokens[:, 1:].reshape(-1))
    opt = optim.Adam(model.parameters(), lr=0.01)
    train = gc.compile([tokens], [loss], updates=opt.minimize(loss), backend=backend)
    losses = [float(train(batches[step % 3])) for step in range(20)]
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    assert losses[-1] < losses[0] * 0.8
    state = model.state_dict()
    assert list(state) == list(reference.state_dict())
    for name, value in reference.state_dict().items():
        expected, got = value.detach().numpy(), state[name]
        if name.endswith("in_proj_bias"):
            # The key bias adds the same amount to every score of a query, which softmax
            # ignores: its gradient is rounding noise, and Adam's steps on it are noise in both
            # frameworks. Compare the query and value biases.
            expected, got = np.delete(expected, np.s_[8:16]), np.delete(got, np.s_[8:16])
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), name


def test_encoder_copies_the_layer():
    layer = nn.TransformerEncoderLayer(4, 2, 8)
    encoder = nn.TransformerEncoder(layer, 2)
    first, second = encoder.layers
    assert first is not layer and first.linear1.weight is not second.linear1.weight
    np.testing.assert_array_equal(first.linear1.weight.numpy(), layer.linear1.weight.numpy())
    np.testing.assert_array_equal(second.linear1.weight.numpy(), layer.linear1.weight.numpy())
    with pytest.raises(GraphError, match="activation"):
        nn.TransformerEncoderLayer(4, 2, activation="swish")
    with pytest.raises(GraphError, match="TransformerDecoder: needs a TransformerDecoderLayer"):
        nn.TransformerDecoder(layer, 2)


def test_input_gradients_match_finite_differences(backend, rng):
    """In float64 (the float32 weights promote): attention with a float mask, and a pre-norm
    encoder layer with a causal mask and padding."""
    mask = gc.tensor(rng.standard_normal((4, 5)))
    assert (
        check_grad(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            [rng.standard_normal(s) for s in ((2, 4, 3), (2, 5, 3), (2, 5, 2))],
            backend=backend,
        )
        < 1e-6
    )
    layer = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, norm_first=True, batch_first=True)
    padding = gc.tensor(np.array([[False, False, True], [False, False, False]]))
    assert (
        check_grad(
            lambda x: layer(x, src_key_padding_mask=padding, is_causal=True),
            [rng.standard_normal((2, 3, 4))],
            backend=backend,
        )
        < 1e-6
    )
