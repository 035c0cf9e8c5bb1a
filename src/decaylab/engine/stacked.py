r"""A *stacked* native forward of K configurations of one model: ordinary kernels do the batching.

:class:`StackedForward` traces the model once with ``torch.fx`` and runs its graph on the K stacked
parameter sets (``θ[k]``, leading configuration axis, as :func:`torch.func.stack_module_state` builds
them) without ``vmap``: activations stay in layouts where the layers' ordinary kernels treat the K
configurations as more rows or more channels, so fused kernels (convolution, batch norm, scaled
dot-product attention) are used and no batching rule, permute or copy per layer is paid.

Layouts of an activation of one configuration ``a_k`` of shape ``(B, *rest)``:

* ``S`` (shared) — ``(B, *rest)``: the same for every configuration (the input when every configuration
  of the stack sees the same minibatch);
* ``KB`` — ``(K·B, *rest)``: configuration-major rows, ``a[k·B + b] = a_k[b]``;
* ``BK`` — ``(B, K·C, *spatial)`` for ``rest = (C, *spatial)``: configuration-major channels, the layout
  of a grouped convolution.

Layer rules (``W[k]`` the configuration's tensor):

* ``Conv1d/2d/3d`` (zero padding): on ``S`` one convolution with ``K·C_out`` output channels
  (weights ``W`` viewed as ``(K·C_out, C_in, …)``) when ``groups = 1`` — for ``Conv2d`` with patches no
  larger than the output (``C_in·k_h·k_w ≤ K·C_out``) as ``F.unfold`` then one matrix product, whose
  output is the ``BK`` view of channels-last memory; otherwise a grouped convolution with
  ``groups = K·g`` on ``BK`` — output ``BK``;
* ``BatchNorm1d/2d/3d``: ``F.batch_norm`` over ``BK`` with ``K·C`` channels — per channel, hence per
  configuration, statistics; the running statistics are views of the stacked buffers and updated in
  place with the layer's momentum (``momentum=None``: the cumulative average ``1/num_batches_tracked``),
  ``num_batches_tracked`` incremented, exactly as ``nn.BatchNorm`` does;
* ``Linear``: ``y[k] = x[k] W[k]ᵀ + b[k]`` as ``torch.baddbmm`` on ``(K, rows, in)``; on ``S`` one
  ``F.linear`` with the K weights concatenated;
* ``LayerNorm``: ``F.layer_norm`` with unit weight and zero bias (its faster kernel), then ``b[k] + y·w[k]``
  in one ``torch.addcmul`` — or, when its only users are ``Linear`` layers of it alone or self-attention on it,
  nothing more: they fold the affine into their weights (``W[k]·diag(w[k])``, ``c[k] + W[k] b[k]``);
* ``Embedding``: one gather from the K tables viewed as ``(K·V, d)`` at ``token + k·V``;
* ``MultiheadAttention`` (``batch_first``, self-attention, no masks, no attention dropout in training,
  ``need_weights=False``): the projections as batched matrix products, then the attention of the
  ``K·B·heads`` sequences — for ``T ≤ SHORT_SEQUENCE`` as :class:`ShortAttention` (batched matrix products
  on the packed projections, with a hand-written backward), longer through ``F.scaled_dot_product_attention`` (the fused kernel);
* elementwise activations, pooling, ``Flatten``, ``Identity``: as they are, on any layout; a ReLU whose
  only user is a max pooling runs after it (the same values and gradients, on the smaller tensor); without
  gradients (evaluation) a 2-D max pooling is the ``torch.maximum`` of its strided slices (the same values);
* :class:`~decaylab.engine.stream_dropout.StreamDropout`: ``x·1[u ≥ p]/(1 − p)`` with the configuration's
  uniforms (the same as the ``vmap`` path's), so masks depend only on the seed;
* functions and methods between nodes: ``+ − × ÷`` (a stacked parameter broadcasts per configuration,
  right-aligned as in one configuration), elementwise activations, ``mean``/``sum``/``amax``/
  ``softmax``/``log_softmax``/``flatten``/``transpose`` over dimensions other than the batch one,
  indexing of tuple outputs.

Anything else — a layer or operation not listed, an option of a listed layer that changes the rules, an
operation on the batch dimension, a model ``torch.fx`` cannot trace — raises :class:`Unsupported` when
the forward is built or checked (:func:`build_stacked`), and the caller falls back to
``vmap(functional_call(...))`` for the whole model: never wrong, only slower.

Sources: ``torch.nn`` modules' own forward definitions (``torch/nn/modules/{conv,batchnorm,linear,
normalization,sparse,activation}.py``, ``F.multi_head_attention_forward``), the grouped-convolution
ensembling idea of model-ensembling with ``torch.func`` (PyTorch tutorial "Model ensembling").
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from decaylab.engine.stream_dropout import StreamDropout

__all__ = ["StackedForward", "Unsupported", "build_stacked"]


class Unsupported(Exception):
    """The stacked forward does not know a layer or operation of the model (the caller falls back to vmap)."""


@dataclass
class Act:
    """An activation of the K configurations: ``value`` in ``layout`` (``'S'``, ``'KB'`` or ``'BK'``)."""

    value: torch.Tensor
    layout: str


@dataclass
class Normalized:
    """A ``LayerNorm``'s output whose affine ``y·w + b`` (stacked ``(K, d)`` tensors, or None) is still to be applied:
    only the layers that fold it into their weights (:func:`_affine_into_linear`) receive one."""

    act: Act
    weight: torch.Tensor | None
    bias: torch.Tensor | None


@dataclass
class Stacked:
    """A tensor with a leading configuration axis ``(K, *shape)`` (a parameter, buffer or a function of them)."""

    value: torch.Tensor


SHORT_SEQUENCE = 64  # up to this length ShortAttention is mostly faster than the fused kernel (measured below)


class ShortAttention(torch.autograd.Function):
    r"""Multi-head self-attention ``softmax(q kᵀ/√d) v`` of ``N`` sequences from their packed projections —
    ``F.scaled_dot_product_attention`` per head, without mask or dropout — as batched matrix products, with
    the gradient written out.

    Input ``qkv``: ``(N, T, 3·E)``, the queries, keys and values of ``heads`` heads of width ``d = E / heads``
    side by side (``MultiheadAttention``'s packed input projection); output ``(N, T, E)``, the heads side by
    side (the input of its output projection). Per sequence and head:

        S = (q/√d) kᵀ,  P = softmax(S) (rows),  O = P v;
        dv = Pᵀ dO,   dP = dO vᵀ,   dS = P ⊙ (dP − rowsum(dP ⊙ P)),   dq = dS k/√d,   dk = dSᵀ (q/√d).

    (The softmax backward as ``torch._softmax_backward_data``; the same equations as FlashAttention's
    backward, Dao et al. 2022, Algorithm 4, without the tiling.) ``q/√d``, ``k`` and ``v`` are laid out per head
    by one kernel (:func:`_heads`). Every product whose result would have
    ``d`` columns is computed transposed — ``Oᵀ = vᵀ Pᵀ``, ``dvᵀ = dOᵀ P``, ``dqᵀ = kᵀ dSᵀ``, ``dkᵀ = qᵀ dS``
    — ``(d × T)`` results, which CPU ``bmm`` computes in 0.85 ms where the ``(T × d)`` ones take 1.45 ms
    (T = 16, d = 8, 4,096 matrices, 2 threads); and the three gradients are written into one ``(N, T, 3·E)``
    tensor (autograd through ``select`` would fill three zero tensors of that size and add them). The weights are
    kept transposed, ``Pᵀ = softmax(k qᵀ)`` over each column, and the softmax's gradient as ``dSᵀ`` from
    ``dPᵀ = v dOᵀ``: a softmax over dim −2 vectorizes across the T queries rather than along one row of T
    (0.75 against 1.08 ms for 8,192 × 16 × 16, 2 threads; the block's step 13.3 against 13.5 ms).
    Forward + backward at 2 threads of the transformer block's 16 stacked configurations (N = 1,024, T = 16,
    E = 32, 4 heads; measured before :func:`_heads` took one kernel): 13.6–14.9 ms against 20.6 ms for the same
    products per ``(q, k, v)`` and 18.8–21.0 ms for the fused kernel. Against the fused kernel (4 heads, 16,384
    or 65,536 tokens, d = 8 or 16, medians of 9): T = 16 and 32: 0.9–2.0× as fast, T = 64: 0.9–2.2× (the 0.9
    where d = 16 and the ``N·heads·T²`` attention weights are the largest), T = 128: 0.73× (hence
    :data:`SHORT_SEQUENCE`). The error against a float64 reference was below the fused kernel's.
    """

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        N, T, E = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        d = E // heads
        q, k, v = _heads(qkv, heads)  # q already /√d
        p_t = torch.softmax(torch.bmm(k, q.transpose(1, 2)), dim=-2)  # Pᵀ: the softmax over a key's column
        ctx.save_for_backward(q, k, v, p_t)
        ctx.scale, ctx.heads = d**-0.5, heads
        o_t = torch.bmm(v.transpose(1, 2), p_t)  # Oᵀ (N·heads, d, T)
        out = qkv.new_empty(N, T, E)  # the heads side by side; not a view, so callers may modify it in place
        out.view(N, T, heads, d).copy_(o_t.view(N, heads, d, T).permute(0, 3, 1, 2))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # the backward is not itself differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        q, k, v, p_t = ctx.saved_tensors  # q is q/√d
        (N, T, E), heads = grad.shape, ctx.heads
        d = E // heads
        grad_t = grad.reshape(N, T, heads, d).permute(0, 2, 3, 1).reshape(N * heads, d, T)
        dv_t = torch.bmm(grad_t, p_t.transpose(1, 2))
        ds_t = torch._softmax_backward_data(torch.bmm(v, grad_t), p_t, -2, p_t.dtype)  # dSᵀ from dPᵀ = v dOᵀ
        dq_t, dk_t = _scaled_bmm(k.transpose(1, 2), ds_t, ctx.scale), torch.bmm(q.transpose(1, 2), ds_t.transpose(1, 2))
        # into a contiguous (N, T, 3, heads, d): stack alone would keep the inputs' layout (T fastest), and autograd
        # would copy the gradient again to reshape it for the input projection (0.56 against 0.66 ms, N = 1,024, T = 16)
        dqkv = grad.new_empty(N, T, 3, heads, d)
        torch.stack([t.view(N, heads, d, T).permute(0, 3, 1, 2) for t in (dq_t, dk_t, dv_t)], dim=2, out=dqkv)
        return dqkv.view(N, T, 3 * E), None


def _heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q/√d``, ``k`` and ``v`` of every head, three contiguous ``(N·heads, T, d)`` tensors, from the packed
    ``(N, T, 3·E)`` projections: one kernel, ``torch._transform_bias_rescale_qkv`` (the layout change of
    ``MultiheadAttention``'s inference fast path; here with a zero bias), 1.3 ms against 3.3 ms for three
    reshape copies (N = 2,048, T = 16, E = 32, 4 heads, 2 threads); the same numbers without it."""
    N, T, E = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    d = E // heads
    transform = getattr(torch, "_transform_bias_rescale_qkv", None)  # private: absent, the copies below
    if transform is not None:
        q, k, v = transform(qkv, qkv.new_zeros(3 * E), heads)
    else:
        x = qkv.view(N, T, 3, heads, d).permute(2, 0, 3, 1, 4)  # (3, N, heads, T, d)
        q, k, v = x[0] * d**-0.5, x[1].contiguous(), x[2].contiguous()
    return q.reshape(N * heads, T, d), k.reshape(N * heads, T, d), v.reshape(N * heads, T, d)


def _scaled_bmm(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · (a @ b)`` by batch, the scaling inside the product (``baddbmm``'s alpha; ``beta=0`` ignores the
    uninitialized input): one pass over the result fewer than ``bmm(a, b).mul_(scale)``."""
    out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
    return torch.baddbmm(out, a, b, beta=0.0, alpha=scale)


_UNARY_MODULES: dict[type, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda m, x: F.relu(x),
    nn.GELU: lambda m, x: F.gelu(x, approximate=m.approximate),
    nn.Tanh: lambda m, x: torch.tanh(x),
    nn.Sigmoid: lambda m, x: torch.sigmoid(x),
    nn.SiLU: lambda m, x: F.silu(x),
    nn.LeakyReLU: lambda m, x: F.leaky_relu(x, m.negative_slope),
    nn.ELU: lambda m, x: F.elu(x, m.alpha),
    nn.Identity: lambda m, x: x,
}
# pooling works per sample and channel: valid on every layout
_POOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_UNARY_FUNCTIONS = {torch.relu, F.relu, F.gelu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.silu, torch.exp,
                    operator.neg, torch.neg, F.leaky_relu, F.elu}
_UNARY_METHODS = {"relu", "tanh", "sigmoid", "exp", "neg"}
_BINARY_FUNCTIONS = {operator.add: torch.add, operator.sub: torch.sub, operator.mul: torch.mul,
                     operator.truediv: torch.div, torch.add: torch.add, torch.sub: torch.sub,
                     torch.mul: torch.mul, torch.div: torch.div}
_BINARY_METHODS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
_DIM_OPS = {"mean", "sum", "amax", "softmax", "log_softmax"}


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer with decaylab's dropout layer kept as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, StreamDropout) or super().is_leaf_module(m, qualname)


class StackedForward:
    """The forward pass of the K configurations of ``model`` on their stacked tensors (see the module docstring).

    ``forward(params, buffers, x, x_dim, masks)``: ``params`` / ``buffers`` map the model's parameter and
    buffer names to ``(K, …)`` tensors; ``x`` is one input ``(B, …)`` shared by all (``x_dim=None``) or
    ``(K, B, …)`` (``x_dim=0``); ``masks`` the dropout uniforms ``(K, *call shape)`` in call order. Returns
    ``(K, B, …)``. Raises :class:`Unsupported` for anything the rules do not cover.
    """

    def __init__(self, model: nn.Module, K: int) -> None:
        self.model, self.K = model, K
        self.modules = dict(model.named_modules())
        for name, m in self.modules.items():
            if m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None):
                raise Unsupported(f"module {name or '<root>'} has hooks (torch.fx does not run them)")
        # one graph per mode: a forward that branches on self.training is traced in each
        self.graphs: dict[bool, fx.Graph] = {}
        was_training = model.training
        try:
            for training in (True, False):
                model.train(training)
                self.graphs[training] = _Tracer().trace(model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure: not supported
            raise Unsupported(f"torch.fx cannot trace the model: {type(exc).__name__}") from None
        finally:
            model.train(was_training)
        for graph in self.graphs.values():
            placeholders = [n for n in graph.nodes if n.op == "placeholder"]
            if len(placeholders) != 1:
                raise Unsupported("the model's forward must take one input")
            for node in graph.nodes:
                if (node.op == "call_module" and getattr(self.modules[node.target], "inplace", False)
                        and (len(node.args) != 1 or len(node.args[0].users) != 1)):
                    raise Unsupported(f"in-place {node.target} whose input is used again")
        self.relu_after_pool = {training: _relu_before_max_pool(graph, self.modules) for training, graph in self.graphs.items()}
        self.folded_norms = {training: _norms_into_linear(graph, self.modules) for training, graph in self.graphs.items()}

    # ------------------------------------------------------------------ layouts
    def to_kb(self, a: Act) -> Act:
        """The activation as ``(K·B, *rest)``."""
        K, x = self.K, a.value
        if a.layout == "KB":
            return a
        if a.layout == "S":
            return Act(x.unsqueeze(0).expand(K, *x.shape).reshape(K * x.shape[0], *x.shape[1:]), "KB")
        B, KC = x.shape[0], x.shape[1]
        return Act(x.reshape(B, K, KC // K, *x.shape[2:]).transpose(0, 1).reshape(K * B, KC // K, *x.shape[2:]), "KB")

    def to_bk(self, a: Act) -> Act:
        """The activation as ``(B, K·C, *spatial)``."""
        K, x = self.K, a.value
        if a.layout == "BK":
            return a
        if x.ndim < 2:
            raise Unsupported("a channel layout needs at least two dimensions")
        if a.layout == "S":
            return Act(x.repeat(1, K, *([1] * (x.ndim - 2))), "BK")
        B = x.shape[0] // K
        return Act(x.reshape(K, B, *x.shape[1:]).transpose(0, 1).reshape(B, K * x.shape[1], *x.shape[2:]), "BK")

    def k_view(self, a: Act) -> torch.Tensor:
        """``(K, B, *rest)`` (``S``: ``(1, B, *rest)``, broadcasting over the configurations)."""
        if a.layout == "S":
            return a.value.unsqueeze(0)
        x = self.to_kb(a).value
        return x.reshape(self.K, x.shape[0] // self.K, *x.shape[1:])

    def from_k(self, y: torch.Tensor) -> Act:
        """``(K, B, *rest)`` back to ``KB``."""
        return Act(y.reshape(y.shape[0] * y.shape[1], *y.shape[2:]), "KB")

    def per_config(self, t: torch.Tensor, one_ndim: int) -> torch.Tensor:
        """A stacked ``(K, *shape)`` tensor shaped to broadcast against a ``(K, B, *rest)`` activation whose one
        configuration has ``one_ndim`` dimensions (right-aligned, as it broadcasts in one configuration)."""
        pnd = t.ndim - 1
        if pnd > one_ndim or (pnd == one_ndim and t.shape[1] != 1):
            raise Unsupported("a parameter that broadcasts over the batch dimension")
        if pnd == one_ndim:
            return t
        return t.reshape(t.shape[0], *([1] * (one_ndim - pnd)), *t.shape[1:])

    # ------------------------------------------------------------------ the graph
    def __call__(self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], x: torch.Tensor,
                 x_dim: int | None, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        self.params, self.buffers, self.masks = params, buffers, list(masks)
        env: dict[fx.Node, Any] = {}
        swapped = self.relu_after_pool[self.model.training]
        try:
            for node in self.graphs[self.model.training].nodes:
                load = lambda v: fx.node.map_arg(v, lambda n: env[n])
                if node in swapped:  # a ReLU whose only user is a max pooling: applied after it (see _relu_before_max_pool)
                    env[node] = env[node.args[0]]
                elif node.op == "call_module" and node.args and isinstance(node.args[0], fx.Node) and node.args[0] in swapped:
                    pooled = self.call_module(node.target, load(node.args), load(node.kwargs))
                    relu = node.args[0]
                    if relu.op == "call_module":  # the module's rule, as where it is not swapped
                        m = self.modules[str(relu.target)]
                        env[node] = Act(_UNARY_MODULES[type(m)](m, pooled.value), pooled.layout)
                    else:
                        env[node] = Act(F.relu(pooled.value), pooled.layout)
                elif node.op == "placeholder":
                    env[node] = Act(x, "S") if x_dim is None else Act(x.reshape(-1, *x.shape[2:]), "KB")
                elif node.op == "get_attr":
                    env[node] = Stacked(self.tensor(node.target))
                elif node.op == "call_module" and node in self.folded_norms[self.model.training]:
                    env[node] = self.layer_norm(node.target, self.modules[node.target], load(node.args)[0], fold=True)
                elif node.op == "call_module":
                    env[node] = self.call_module(node.target, load(node.args), load(node.kwargs))
                elif node.op == "call_function":
                    env[node] = self.call_function(node.target, load(node.args), load(node.kwargs))
                elif node.op == "call_method":
                    env[node] = self.call_method(node.target, load(node.args), load(node.kwargs))
                elif node.op == "output":
                    out = load(node.args[0])
                    if not isinstance(out, Act):
                        raise Unsupported("the model must return one tensor of the batch")
                    return self.k_view(self.to_kb(out))
        finally:
            self.params, self.buffers, self.masks = {}, {}, []
        raise Unsupported("the graph has no output")  # pragma: no cover - fx graphs always have one

    def tensor(self, name: str) -> torch.Tensor:
        if name in self.params:
            return self.params[name]
        if name in self.buffers:
            return self.buffers[name]
        raise Unsupported(f"attribute {name!r} is not a parameter or buffer")

    def own(self, prefix: str, name: str) -> Any:
        """The stacked tensor ``prefix.name``, or None when the module has it as None."""
        full = f"{prefix}.{name}" if prefix else name
        owner, _, attr = full.rpartition(".")
        if getattr(self.modules[owner], attr, None) is None:
            return None
        return self.tensor(full)

    # ------------------------------------------------------------------ modules
    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        m: Any = self.modules[target]
        kind = type(m)
        if kind is nn.MultiheadAttention:
            return self.attention(target, m, args, kwargs)
        if kind is nn.Linear and not kwargs and len(args) == 1 and isinstance(args[0], Normalized):
            n = args[0]
            return self.linear(n.act, *_affine_into_linear(self.own(target, "weight"), self.own(target, "bias"), n.weight, n.bias))
        if kwargs or len(args) != 1 or not isinstance(args[0], Act):
            raise Unsupported(f"call of {target} ({kind.__name__}) with other arguments than one activation")
        a: Act = args[0]
        if kind in _UNARY_MODULES:
            return Act(_UNARY_MODULES[kind](m, a.value), a.layout)
        if kind in _POOL_TYPES:
            if getattr(m, "return_indices", False):
                raise Unsupported(f"{target}: return_indices")
            return Act(self.pool(m, a.value), a.layout)
        if kind is nn.Flatten:
            return self.flatten(a, m.start_dim, m.end_dim)
        if isinstance(m, StreamDropout):
            return self.dropout(m, a)
        if kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            return self.conv(target, m, a)
        if kind in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            return self.batch_norm(target, m, a)
        if kind is nn.Linear:
            return self.linear(a, self.own(target, "weight"), self.own(target, "bias"))
        if kind is nn.LayerNorm:
            return self.layer_norm(target, m, a)
        if kind is nn.Embedding:
            return self.embedding(target, m, a)
        raise Unsupported(f"layer {target} ({kind.__name__})")

    @staticmethod
    def pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``m(x)``; without gradients a 2-D max pooling (no padding or dilation, floor mode) is the elementwise
        ``torch.maximum`` of its ``kh·kw`` strided slices of ``x``: the same numbers (a maximum is exact; NaN
        propagates in both), without the indices that PyTorch's CPU ``max_pool2d`` computes for a backward. On
        contiguous (NCHW) tensors that kernel measured 6× slower than the slices on the digits CNN's
        (128, 128, 8, 8) activations (7.8 ms against 1.3 ms, one thread). In training the kernel stays: its
        backward sends the gradient to the first maximum of a window, ``torch.maximum``'s splits it between ties."""
        if type(m) is not nn.MaxPool2d or x.ndim != 4 or torch.is_grad_enabled():
            return m(x)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        (kh, kw), (sh, sw) = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
        if pair(m.padding) != (0, 0) or pair(m.dilation) != (1, 1) or m.ceil_mode:
            return m(x)
        H, W = x.shape[-2:]
        Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
        if Ho < 1 or Wo < 1:
            return m(x)
        out: torch.Tensor | None = None
        for i in range(kh):
            for j in range(kw):
                s = x[..., i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw]
                out = s if out is None else torch.maximum(out, s)
        assert out is not None
        return out if kh * kw > 1 else out.contiguous()

    def dropout(self, m: Any, a: Act) -> Act:
        """``x·1[u ≥ p]/(1 − p)`` as :class:`~decaylab.engine.stream_dropout.StreamDropout` computes it."""
        if not m.training or m.p == 0.0 or not self.masks:  # no masks: a check run without uniforms, the identity
            return a
        u = self.masks.pop(0)
        x = self.to_kb(a) if a.layout == "S" else a
        keep = (u >= m.p).to(x.value.dtype)
        keep = keep.reshape(-1, *keep.shape[2:])  # KB
        if x.layout == "BK":
            keep = self.to_bk(Act(keep, "KB")).value
        if m.p >= 1.0:
            return Act(x.value * keep, x.layout)
        return Act(x.value * keep / (1.0 - m.p), x.layout)

    def conv(self, target: str, m: Any, a: Act) -> Act:
        if m.padding_mode != "zeros":
            raise Unsupported(f"{target}: padding_mode {m.padding_mode!r}")
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(m)]
        W, b = self.own(target, "weight"), self.own(target, "bias")
        K = self.K
        weight = W.reshape(K * W.shape[1], *W.shape[2:])
        bias = None if b is None else b.reshape(-1)
        if a.layout == "S" and m.groups == 1:
            if type(m) is nn.Conv2d and isinstance(m.padding, tuple) and a.value.ndim == 4 \
                    and W[0].numel() // W.shape[1] <= K * W.shape[1]:
                return Act(self.conv2d_unfolded(a.value, W, b, m), "BK")
            x, groups = a.value, 1
        else:
            x, groups = self.to_bk(a).value, K * m.groups
        return Act(conv(x, weight, bias, m.stride, m.padding, m.dilation, groups), "BK")

    def conv2d_unfolded(self, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, m: Any) -> torch.Tensor:
        """The K configurations' 2-D convolutions of one shared input ``x`` (B, C_in, H, W) as one matrix product:
        ``F.unfold`` gives the (B, H_o·W_o, C_in·k_h·k_w) patches once, one matrix product multiplies them by the K
        weights side by side (K·C_out, C_in·k_h·k_w); the result (B, H_o, W_o, K·C_out) is returned as the
        (B, K·C_out, H_o, W_o) view of it, i.e. in channels-last memory, which the layers after it keep (PyTorch's
        CPU max pooling is 4-15× faster there). Used when the patches are no larger than the output
        (C_in·k_h·k_w ≤ K·C_out). The same sums as the convolution, in another order (float32 rounding).
        On the digits CNN (16 configurations, batch 64) the first convolution's forward and backward took
        1.9 ms this way against 3.3 ms as one convolution, and the whole network's step 6.6 ms against 13.8 ms;
        with the product's operands laid out as below, the step's median 8.3 ms against 9.4 ms (2 threads, 5
        processes each, alternating; this machine's timings vary by ±20 %)."""
        B, (H, Wd) = x.shape[0], x.shape[-2:]
        K, C_out = self.K, W.shape[1]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
        Ho, Wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (Wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        patches = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw)).transpose(1, 2).reshape(B * Ho * Wo, -1)
        # the weights as a row-major (C_in·kh·kw, K·C_out) factor: autograd's gradient of a row-major second factor is
        # patchesᵀ·grad, 3× faster here than the (gradᵀ·patches)ᵀ it computes for F.linear's transposed weight; the
        # bias added after the product (addmm first copies the broadcast bias into its output: slower here)
        y = patches.mm(W.reshape(K * C_out, -1).t().contiguous())
        if b is not None:
            y = y + b.reshape(-1)
        return y.view(B, Ho, Wo, K * C_out).permute(0, 3, 1, 2)

    def batch_norm(self, target: str, m: Any, a: Act) -> Act:
        """``nn.BatchNorm``'s forward with ``K·C`` channels (running statistics: views of the stacked buffers)."""
        x = self.to_bk(a).value
        running_mean, running_var = self.own(target, "running_mean"), self.own(target, "running_var")
        tracked = self.own(target, "num_batches_tracked")
        factor = 0.0 if m.momentum is None else m.momentum
        if m.training and m.track_running_stats and tracked is not None:
            tracked.add_(1)
            if m.momentum is None:  # cumulative moving average
                factor = 1.0 / float(tracked[0])
        use_batch = m.training or (running_mean is None and running_var is None)
        weight, bias = self.own(target, "weight"), self.own(target, "bias")
        y = F.batch_norm(
            x,
            running_mean.view(-1) if running_mean is not None and (not m.training or m.track_running_stats) else None,
            running_var.view(-1) if running_var is not None and (not m.training or m.track_running_stats) else None,
            None if weight is None else weight.reshape(-1),
            None if bias is None else bias.reshape(-1),
            use_batch, factor, m.eps,
        )
        return Act(y, "BK")

    def linear(self, a: Act, W: torch.Tensor, b: torch.Tensor | None) -> Act:
        """``y[k] = x[k] W[k]ᵀ + b[k]``."""
        K, (out, inp) = self.K, W.shape[1:]
        if a.layout == "S":  # one product with the K weights side by side
            y = F.linear(a.value, W.reshape(K * out, inp), None if b is None else b.reshape(-1))
            if y.ndim == 2:
                return Act(y, "BK")
            return Act(y.unflatten(-1, (K, out)).movedim(-2, 0).reshape(K * y.shape[0], *y.shape[1:-1], out), "KB")
        if a.layout == "BK" and a.value.ndim == 2:
            x3 = a.value.reshape(a.value.shape[0], K, inp).transpose(0, 1)
            rest: tuple[int, ...] = ()
        else:
            x = self.to_kb(a).value
            rest = tuple(x.shape[1:-1])
            x3 = x.reshape(K, -1, inp)
        y = torch.bmm(x3, W.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), x3, W.transpose(1, 2))
        return Act(y.reshape(-1, *rest, out), "KB")

    def layer_norm(self, target: str, m: Any, a: Act, fold: bool = False) -> Act | Normalized:
        """``F.layer_norm`` without affine, then ``b[k] + y·w[k]``; ``fold``: the affine left to the Linear or
        attention layers after it (:func:`_norms_into_linear`), which fold it into their weights."""
        ns = tuple(m.normalized_shape)
        x = a if a.layout == "S" else self.to_kb(a)
        # unit weight and zero bias: the same values as none, and F.layer_norm's kernel with both is ~1.6× faster
        # (float32, 32 features, 2 threads: 1.07 against 1.70 ms for 32,768 rows)
        one, zero = (torch.full(ns, v, dtype=x.value.dtype, device=x.value.device) for v in (1.0, 0.0))
        y = Act(F.layer_norm(x.value, ns, one, zero, m.eps), x.layout)
        w, b = self.own(target, "weight"), self.own(target, "bias")
        if fold:
            return Normalized(y, w, b)
        if w is None and b is None:
            return y
        yk = self.k_view(y)
        one_ndim = yk.ndim - 1
        if w is not None and b is not None:  # one pass: b + y·w
            yk = torch.addcmul(self.per_config(b, one_ndim), yk, self.per_config(w, one_ndim))
        elif w is not None:
            yk = yk * self.per_config(w, one_ndim)
        elif b is not None:
            yk = yk + self.per_config(b, one_ndim)
        if yk.shape[0] != self.K:
            yk = yk.expand(self.K, *yk.shape[1:])
        return self.from_k(yk)

    def embedding(self, target: str, m: Any, a: Act) -> Act:
        if m.padding_idx is not None or m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            raise Unsupported(f"{target}: an Embedding with padding_idx, max_norm, scale_grad_by_freq or sparse")
        W = self.own(target, "weight")
        K, V = self.K, W.shape[1]
        idx = self.k_view(a if a.layout == "S" else self.to_kb(a))
        offsets = torch.arange(K, device=idx.device, dtype=idx.dtype).mul_(V).view(K, *([1] * (idx.ndim - 1)))
        # index_select rather than F.embedding: its gradient is one index_add_ (0.49 ms against embedding's dense
        # backward's 1.65 ms for 16 tables of 32 × 32 and 16,384 tokens, 2 threads)
        idx = idx + offsets  # (K, B, *rest): S's (1, B, *rest) broadcasts
        rows = W.reshape(K * V, W.shape[2]).index_select(0, idx.reshape(-1))
        return self.from_k(rows.view(*idx.shape, W.shape[2]))

    def attention(self, target: str, m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[Act, None]:
        """Self-attention as ``F.multi_head_attention_forward`` computes it with ``need_weights=False``."""
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")
        call = {**dict(zip(names, args, strict=False)), **kwargs}
        q = call.get("query")
        if call.get("key") is not q or call.get("value") is not q or not isinstance(q, (Act, Normalized)):
            raise Unsupported(f"{target}: attention other than self-attention on one activation")
        if call.get("need_weights", True) or call.get("key_padding_mask") is not None or call.get("attn_mask") is not None \
                or call.get("is_causal", False):
            raise Unsupported(f"{target}: need_weights, masks or is_causal")
        if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn \
                or (m.training and m.dropout > 0):
            raise Unsupported(f"{target}: a MultiheadAttention that is not batch_first, plain, without dropout")
        K, E, H = self.K, m.embed_dim, m.num_heads
        w_in, b_in = self.own(target, "in_proj_weight"), self.own(target, "in_proj_bias")
        if isinstance(q, Normalized):
            w_in, b_in = _affine_into_linear(w_in, b_in, q.weight, q.bias)
            q = q.act
        x = self.to_kb(q).value
        if x.ndim != 3:
            raise Unsupported(f"{target}: unbatched attention input")
        T = x.shape[1]
        x3 = x.reshape(K, -1, E)
        qkv = torch.bmm(x3, w_in.transpose(1, 2)) if b_in is None else torch.baddbmm(b_in.unsqueeze(1), x3, w_in.transpose(1, 2))
        if T <= SHORT_SEQUENCE:
            o = ShortAttention.apply(qkv.view(-1, T, 3 * E), H)
        else:
            qh, kh, vh = (t.transpose(1, 2) for t in qkv.view(-1, T, 3, H, E // H).unbind(2))  # (K·B, H, T, d_head)
            o = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(-1, T, E)
        return (self.linear(Act(o, "KB"), self.own(target, "out_proj.weight"), self.own(target, "out_proj.bias")), None)

    # ------------------------------------------------------------------ functions and methods
    def flatten(self, a: Act, start: int, end: int) -> Act:
        nd = a.value.ndim
        start, end = start % nd, end % nd
        if start < 1:
            raise Unsupported("flatten over the batch dimension")
        if a.layout == "BK" and not (start == 1 and end == nd - 1):
            a = self.to_kb(a)
        return Act(a.value.flatten(start, end), a.layout)

    def binary(self, fn: Any, x: Any, y: Any, kwargs: dict) -> Any:
        if not isinstance(x, (Act, Stacked)) and not isinstance(y, (Act, Stacked)):
            return fn(x, y, **kwargs)
        for v in (x, y):
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                raise Unsupported("an operation with a tensor that is not a parameter, buffer or activation")
        if isinstance(x, Stacked) and isinstance(y, Stacked):
            nd = max(x.value.ndim, y.value.ndim) - 1
            pad = lambda t: t.reshape(t.shape[0], *([1] * (nd + 1 - t.ndim)), *t.shape[1:])
            return Stacked(fn(pad(x.value), pad(y.value), **kwargs))
        if isinstance(x, Act) and isinstance(y, Act) and x.layout == y.layout:
            return Act(fn(x.value, y.value, **kwargs), x.layout)
        if not isinstance(x, (Act, Stacked)) or not isinstance(y, (Act, Stacked)):  # an activation and a number
            a = x if isinstance(x, (Act, Stacked)) else y
            if isinstance(a, Stacked):
                return Stacked(fn(x.value if x is a else x, y.value if y is a else y, **kwargs))
            return Act(fn(x.value if x is a else x, y.value if y is a else y, **kwargs), a.layout)
        acts = [v for v in (x, y) if isinstance(v, Act)]
        one_ndim = acts[0].value.ndim
        k = lambda v: self.k_view(v) if isinstance(v, Act) else self.per_config(v.value, one_ndim)
        out = fn(k(x), k(y), **kwargs)
        return self.from_k(out)

    def unary_ok(self, a: Any) -> Act:
        if not isinstance(a, Act):
            raise Unsupported("an operation on a parameter outside a layer")
        return a

    def dims(self, a: Act, dims: Any) -> Act:
        """``a`` in a layout where ``dims`` (of one configuration) are plain dimensions, which must not be the batch one."""
        nd = a.value.ndim
        for d in dims if isinstance(dims, (tuple, list)) else (dims,):
            if not isinstance(d, int) or d % nd == 0:
                raise Unsupported("an operation over the batch dimension")
        return a if a.layout == "S" else self.to_kb(a)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in _BINARY_FUNCTIONS and len(args) == 2 and set(kwargs) <= {"alpha"}:
            return self.binary(_BINARY_FUNCTIONS[target], args[0], args[1], kwargs)
        if target is operator.getitem and isinstance(args[0], tuple):
            return args[0][args[1]]
        if target in _UNARY_FUNCTIONS and not kwargs.get("inplace", False):
            a = self.unary_ok(args[0])
            return Act(target(a.value, *args[1:], **kwargs), a.layout)
        if target in (torch.flatten,):
            return self.flatten(self.unary_ok(args[0]), *(list(args[1:]) + [kwargs.get("start_dim", 0), kwargs.get("end_dim", -1)][len(args) - 1:]))
        if target in (torch.mean, torch.sum, torch.amax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
            return self.reduce(target, args, kwargs)
        raise Unsupported(f"function {getattr(target, '__name__', target)}")

    def reduce(self, fn: Callable, args: tuple, kwargs: dict) -> Act:
        a = self.unary_ok(args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:
            raise Unsupported("a reduction over every dimension")
        a = self.dims(a, dim)
        return Act(fn(a.value, *args[1:], **kwargs), a.layout)

    def call_method(self, name: str, args: tuple, kwargs: dict) -> Any:
        self_arg = args[0]
        if name in _BINARY_METHODS and len(args) == 2 and set(kwargs) <= {"alpha"}:
            return self.binary(_BINARY_METHODS[name], self_arg, args[1], kwargs)
        a = self.unary_ok(self_arg)
        if name in _UNARY_METHODS and len(args) == 1 and not kwargs:
            return Act(getattr(a.value, name)(), a.layout)
        if name in _DIM_OPS:
            return self.reduce(lambda t, *r, **k: getattr(t, name)(*r, **k), args, kwargs)
        if name == "flatten":
            rest = list(args[1:]) + [kwargs.get("start_dim", 0), kwargs.get("end_dim", -1)][len(args) - 1:]
            return self.flatten(a, rest[0], rest[1])
        if name == "transpose" and len(args) == 3 and not kwargs:
            a = self.dims(a, (args[1], args[2]))
            return Act(a.value.transpose(args[1], args[2]), a.layout)
        raise Unsupported(f"method .{name}()")


def _relu_before_max_pool(graph: fx.Graph, modules: Mapping[str, nn.Module]) -> set[fx.Node]:
    """The ReLU nodes of ``graph`` whose only user is a max pooling of them alone: the forward computes
    ``relu(maxpool(x))`` instead of ``maxpool(relu(x))`` — the same numbers (ReLU is monotone; NaN stays NaN)
    and the same gradient (the pooling's backward sends it to the first maximum of the window; where that
    maximum is ≤ 0 ReLU's backward makes it 0 in either order, elsewhere the first maximum of ``x`` and of
    ``relu(x)`` is the same element), with the ReLU and its backward on the pooled, smaller tensor."""
    def is_relu(node: fx.Node) -> bool:
        if node.kwargs or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            return False
        if node.op == "call_module":
            return type(modules[str(node.target)]) is nn.ReLU
        return (node.op == "call_function" and node.target in (torch.relu, F.relu)) or \
            (node.op == "call_method" and node.target == "relu")

    def is_max_pool(node: fx.Node) -> bool:
        if node.op != "call_module" or node.kwargs or len(node.args) != 1:
            return False
        m = modules[str(node.target)]
        return type(m) in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d) and not m.return_indices

    return {node for node in graph.nodes if is_relu(node) and len(node.users) == 1 and is_max_pool(next(iter(node.users)))}


def _norms_into_linear(graph: fx.Graph, modules: Mapping[str, nn.Module]) -> set[fx.Node]:
    """The ``LayerNorm`` nodes of ``graph`` with an affine over one dimension whose every user is a ``Linear`` of them
    alone or a ``MultiheadAttention`` with them as query, key and value: the affine is folded into those layers'
    weights (:func:`_affine_into_linear`), so the activations pass through no elementwise ``b + y·w`` forward or
    backward (the transformer block's step of 16 configurations at 2 threads: 4 passes over its ``(K·B·T, d)``
    activations fewer, with their reductions for the gradients of ``w`` and ``b``)."""
    def folds_into(user: fx.Node, node: fx.Node) -> bool:
        if user.op != "call_module":
            return False
        m = modules[str(user.target)]
        if type(m) is nn.Linear:
            return user.args == (node,) and not user.kwargs
        if type(m) is nn.MultiheadAttention:
            names = ("query", "key", "value")
            call = {**dict(zip(names, user.args, strict=False)), **user.kwargs}
            return all(call.get(n) is node for n in names) and not any(a is node for a in user.args[3:])
        return False

    folded = set()
    for node in graph.nodes:
        m = modules[str(node.target)] if node.op == "call_module" else None
        if isinstance(m, nn.LayerNorm) and type(m) is nn.LayerNorm and m.elementwise_affine and not node.kwargs \
                and len(m.normalized_shape) == 1 and node.users and all(folds_into(user, node) for user in node.users):
            folded.add(node)
    return folded


def _affine_into_linear(W: torch.Tensor, c: torch.Tensor | None, w: torch.Tensor | None, b: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stacked Linear ``x ↦ x Wᵀ + c`` (``W`` (K, out, in), ``c`` (K, out)) of ``x = y·w + b`` (``w``, ``b``
    (K, in)) as one Linear of ``y``: ``W' = W·diag(w)``, ``c' = c + W b`` — the same function, its gradients
    through these small products (float32 rounding in another order)."""
    if b is not None:
        shift = torch.bmm(W, b.unsqueeze(-1)).squeeze(-1)
        c = shift if c is None else c + shift
    if w is not None:
        W = W * w.unsqueeze(1)
    return W, c


def build_stacked(model: nn.Module, K: int, check: Callable[[StackedForward], None]) -> tuple[StackedForward | None, str]:
    """The stacked forward of ``model`` for ``K`` configurations, or ``(None, reason)`` when it does not know the
    model; ``check(forward)`` runs it once (on copies of the buffers) and may raise :class:`Unsupported`."""
    try:
        forward = StackedForward(model, K)
        check(forward)
    except Unsupported as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a rule that does not fit the model: fall back, never fail
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return forward, ""
