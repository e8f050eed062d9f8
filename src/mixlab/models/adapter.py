"""The staging adapter: a user's own ``nn.Module`` as a :class:`~mixlab.models.StagedNet`, without rewriting it.

Feature-space and learned methods (Manifold Mixup, AlignMixup, (Dense) MultiMix, WordMixup / SentMixup, AMP,
...) need to run a network piece by piece: the stages up to a mixing point, the rest from a mixed hidden state,
the pooling and the classifier. :func:`stage` gives any model that interface:

>>> net = mixlab.stage(my_resnet)                                      # a known layout, found automatically
>>> net = mixlab.stage(my_net, points=["block1", "block2", "block3"], head="classifier")   # or named

**Mixing points** are sub-modules named as in ``model.named_modules()``: stage ``k`` ends at the output of
``points[k]``, so "mix at stage k" (``k >= 1``) mixes that module's output, and ``k = 0`` the input. ``head`` is
the classifier module; everything between the last point and the head (pooling, flattening, norms) is
``pool``. The model's own ``forward`` is traced once with ``torch.fx`` (sub-modules that are not on the way to a
point stay opaque) and cut at the points, so functional glue in ``forward`` (``F.relu``, ``torch.flatten``, a class
token and position embedding, ...) is kept exactly; the pieces call the model's own modules and parameters. A
point is valid when nothing computed before it is used after it except its output (a skip connection around a
point is refused with a clear error).

**Found automatically** (``points=None``): torchvision-style ResNets (``conv1 ... layer1..4, avgpool, fc``:
stages end at ``layer1..4``), vision transformers with a patch embedding, blocks, a final norm and a head (class
token or mean pooling; stages end at the first and second third of the blocks and at the final norm), and
HuggingFace ``transformers`` BERT-family sequence classifiers (``*ForSequenceClassification``: stage 0 = the
embeddings with a mask channel, stage 1 = the encoder and pooler, as mixlab's text models, see
:mod:`mixlab.models.hf`).

**Checked, not assumed**: the first time the stages run, the adapter compares ``head(pool(stages(x)))`` with the
model's own output on that batch (eval mode, no gradient) and raises if they differ. ``forward`` *is* the model's
own forward, so evaluation and ERM cost nothing extra. Token outputs of a transformer ``(B, T, D)`` appear as a
feature map ``(B, D, T, 1)`` at the last stage (the layout AlignMixup and Dense MultiMix expect); ``pool`` takes
them back. ``gap_linear_head`` (exact CAMs) is measured: a linear head on a pooling that equals global average
pooling.

Limits: ``torch.fx`` cannot trace data-dependent control flow in the traced part of ``forward`` (sub-modules
that are not ancestors of a point are not traced, so this only concerns the top levels), and Python-level
branches on ``self.training`` there are frozen at trace time (modules such as ``nn.Dropout`` are fine).
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import Tensor, nn

from .staged import StagedNet


class AdapterError(ValueError):
    """A model the adapter cannot stage as asked, with what to do instead."""


# ---------------------------------------------------------------------------------------------- tracing
class _Root(nn.Module):
    """Holds the user's model as ``model`` so that its ``forward`` runs with its own default arguments."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class _Tracer(fx.Tracer):
    """Traces only the modules on the way to a named point (their ancestors); every other module is one call."""

    def __init__(self, ancestors: set[str]):
        super().__init__()
        self.ancestors = ancestors

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname not in self.ancestors


def _ancestors(names) -> set[str]:
    out = {""}
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def split_forward(model: nn.Module, points: list[str], head: str) -> tuple[_Root, list[fx.Graph], fx.Graph]:
    """Trace ``model.forward`` and cut it at ``points``: ``(root, [stage graphs], pool graph)``; each graph takes
    one tensor and returns one. Raises :class:`AdapterError` when the cut is not possible."""
    names = {name for name, _ in model.named_modules()}
    missing = [p for p in [*points, head] if p not in names]
    if missing:
        raise AdapterError(f"{type(model).__name__} has no sub-modules {missing}; the names are those of "
                           f"model.named_modules(), e.g. {sorted(n for n in names if n and '.' not in n)}")
    root = _Root(model)
    full = [f"model.{p}" for p in points]
    head_q = f"model.{head}"
    try:
        graph = _Tracer(_ancestors([*full, head_q])).trace(root)
    except Exception as error:  # untraceable control flow: say where and what to do
        raise AdapterError(f"could not trace {type(model).__name__}.forward with torch.fx ({type(error).__name__}: "
                           f"{error}); name mixing points deeper in the model, or write the model's forward without "
                           f"data-dependent Python branches on the way to them") from error
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    inputs = [n for n in nodes if n.op == "placeholder"]

    def call_of(target: str, label: str) -> fx.Node:
        calls = [n for n in nodes if n.op == "call_module" and n.target == target]
        if len(calls) != 1:
            raise AdapterError(f"{label} {target[6:]!r} is called {len(calls)} times by {type(model).__name__}.forward "
                               f"(a mixing point must be called exactly once)")
        return calls[0]

    cuts = [call_of(p, "mixing point") for p in full]
    head_node = call_of(head_q, "head")
    order = [pos[c] for c in cuts] + [pos[head_node]]
    if order != sorted(order) or len(set(order)) != len(order):
        raise AdapterError(f"the mixing points {points} and the head {head!r} must be given in the order the forward "
                           f"calls them")
    (out_node,) = [n for n in nodes if n.op == "output"]
    result = out_node.args[0]
    if isinstance(result, (tuple, list)) and result:
        result = result[0]
    if result is not head_node:
        raise AdapterError(f"{type(model).__name__}.forward does not return the output of head {head!r} (logits) as is; "
                           f"name the module whose output is the logits")
    if len(head_node.args) != 1 or head_node.kwargs:
        raise AdapterError(f"head {head!r} must be called on one tensor (the pooled features)")

    dep: set[fx.Node] = set()  # nodes that depend on the input (the rest: parameters, constants)
    for n in nodes:
        if n.op == "placeholder" or any(a in dep for a in n.all_input_nodes):
            dep.add(n)
    bounds = [pos[c] for c in cuts]

    def part(n: fx.Node) -> int:
        return sum(b < pos[n] for b in bounds)

    graphs = []
    for q in range(len(points) + 1):
        source = inputs[0] if q == 0 else cuts[q - 1]
        target = cuts[q] if q < len(points) else head_node.args[0]
        members = [n for n in nodes if n in dep and n.op not in ("placeholder", "output") and n is not head_node
                   and part(n) == q]
        inside = set(members) | {source}
        for n, needs in [(m, m.all_input_nodes) for m in members] + [(target, [target])]:
            for a in needs:
                if isinstance(a, fx.Node) and a in dep and a not in inside:
                    where = f"mixing point {points[q - 1]!r}" if q else "the input"
                    raise AdapterError(f"{a.name} (computed before {where}) is used after it by {n.name}: a skip "
                                       f"connection around a mixing point; choose points between which only one "
                                       f"tensor flows (e.g. the outputs of whole residual groups)")
        graphs.append(_copy_part(members, source, target, dep))
    return root, graphs[:-1], graphs[-1]


def _copy_part(members: list[fx.Node], source: fx.Node, target, dep: set[fx.Node]) -> fx.Graph:
    g = fx.Graph()
    env = {source: g.placeholder("h")}

    def value(n: fx.Node):
        if n not in env:
            if n in dep:  # cannot happen after the checks in split_forward
                raise AdapterError(f"internal: {n.name} is not available in this stage")
            env[n] = g.node_copy(n, value)  # parameters and constants: copied wherever they are used
        return env[n]

    for n in members:
        env[n] = g.node_copy(n, value)
    g.output(value(target) if isinstance(target, fx.Node) else target)
    g.lint()
    return g


# ---------------------------------------------------------------------------------------------- layouts
PATCH_EMBEDS = ("patch_embed", "conv_proj", "patch_embedding", "to_patch_embedding")
BLOCK_LISTS = ("blocks", "layers", "encoder.layers", "transformer.layers", "transformer.blocks", "encoder.blocks")
FINAL_NORMS = ("norm", "encoder.ln", "ln", "transformer.norm", "encoder.norm")
HEADS = ("head", "heads", "fc", "classifier", "mlp_head")


def _is_hf_text(model: nn.Module) -> bool:
    base = getattr(model, "base_model", None)
    return (hasattr(model, "config") and base is not None and base is not model and hasattr(base, "embeddings")
            and hasattr(base, "encoder") and hasattr(model, "classifier"))


def find_layout(model: nn.Module) -> dict:
    """Mixing points of a known layout: ``{"kind": "fx", "points", "head", "layout"}`` or ``{"kind": "hf-text"}``."""
    if _is_hf_text(model):
        return {"kind": "hf-text", "layout": "transformers sequence classifier"}
    modules = dict(model.named_modules())
    children = dict(model.named_children())
    if all(k in children for k in ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")):
        return {"kind": "fx", "points": ["layer1", "layer2", "layer3", "layer4"], "head": "fc",
                "layout": "torchvision-style ResNet"}
    embed = next((n for n in PATCH_EMBEDS if n in modules), None)
    blocks = next((n for n in BLOCK_LISTS if isinstance(modules.get(n), (nn.ModuleList, nn.Sequential))
                   and len(modules[n])), None)
    head = next((n for n in HEADS if n in children), None)
    if embed and blocks and head:
        depth = len(modules[blocks])
        groups = min(3, depth)
        ends = [round(depth * (j + 1) / groups) for j in range(groups)]
        names = [n for n, _ in modules[blocks].named_children()]
        points = [f"{blocks}.{names[e - 1]}" for e in ends]
        norm = next((n for n in FINAL_NORMS if n in modules and n not in points), None)
        if norm is not None:
            points[-1] = norm  # the last stage ends at the final norm, after the last block
        return {"kind": "fx", "points": points, "head": head, "layout": "vision transformer"}
    raise AdapterError(
        f"mixlab does not know the layout of {type(model).__name__} (known: torchvision-style ResNet, vision "
        f"transformers with patch_embed/blocks/norm/head, transformers *ForSequenceClassification); name the mixing "
        f"points: mixlab.stage(model, points=[module names where stages end], head='classifier module')")


def _logits(out) -> Tensor:
    """The logits of a model's output: a tensor, ``.logits`` (transformers), or the first element of a tuple."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot find the logits in a model output of type {type(out).__name__}")


class _HFHead(nn.Module):
    """A transformers classification head on the sentence vector: ``classifier(dropout(v))`` (BERT), or a head
    that reads the ``[CLS]`` position itself, given ``v`` as a one-token sequence (RoBERTa)."""

    def __init__(self, classifier: nn.Module, dropout: nn.Module | None):
        super().__init__()
        self.classifier, self.dropout = classifier, dropout

    def forward(self, v: Tensor) -> Tensor:
        return self.classifier(self.dropout(v) if self.dropout is not None else v[:, None, :])


# ---------------------------------------------------------------------------------------------- adapter
class StagedAdapter(StagedNet):
    """A user's ``nn.Module`` with the staged interface (see the module docstring); the model is not changed.

    Args:
        model: the network (``model(x)`` returns logits, or an output with ``.logits``).
        points: names of the sub-modules where stages end (default: found for known layouts).
        head: name of the classifier module (default: found with the points).
        mix_stages: Manifold Mixup's default candidates (default: ``(0, 1, 2)``, the input and the first two
            points, as the staged ResNets; ``(1,)`` for text models).
        verify: compare the staged path with the model's own output the first time it runs (default on).
    The model is registered as ``self.model`` (state-dict keys ``model.*``); its parameters are trained in place.
    """

    def __init__(self, model: nn.Module, points: list[str] | tuple[str, ...] | None = None, head: str | None = None,
                 mix_stages: tuple[int, ...] | None = None, verify: bool = True):
        super().__init__()
        if isinstance(model, StagedAdapter):
            raise TypeError("the model is already staged")
        self.model = model
        if points is None and head is None:
            spec = find_layout(model)
        elif points is None or head is None:
            raise AdapterError("name both the mixing points and the head (or neither, for a known layout)")
        else:
            spec = {"kind": "fx", "points": list(points), "head": head, "layout": "named points"}
        self.layout = spec["layout"]
        self._verified = not verify
        self._tokens = False  # last-stage output was (B, T, D) tokens, shown as a (B, D, T, 1) map
        if spec["kind"] == "hf-text":
            self._init_hf_text(model)
        else:
            if not spec["points"]:
                raise AdapterError("give at least one mixing point")
            self.points, self.head_name = tuple(spec["points"]), spec["head"]
            self._graphs = split_forward(model, list(self.points), self.head_name)
            self._build()
        n = len(self._parts["stages"])
        self.mix_stages = tuple(mix_stages) if mix_stages is not None else (
            self.mix_stages if spec["kind"] == "hf-text" else tuple(range(min(3, n))))
        bad = [k for k in self.mix_stages if not 0 <= k < n]
        if bad:
            raise AdapterError(f"mix_stages {bad} out of range: the adapter has stages 0..{n - 1}")

    # --------------------------------------------------------------------------------------------- building
    def _build(self) -> None:
        """GraphModules over the model's own modules (rebuilt after ``.to()``, which replaces buffers)."""
        root, stage_graphs, pool_graph = self._graphs
        self._parts = {"stages": [fx.GraphModule(root, g) for g in stage_graphs],
                       "pool": fx.GraphModule(root, pool_graph),
                       "head": self.model.get_submodule(self.head_name)}

    def _init_hf_text(self, model: nn.Module) -> None:
        from .hf import HFEmbedding, HFEncoder

        base, config = model.base_model, model.config
        pad = getattr(config, "pad_token_id", None)
        self.pad_id = 0 if pad is None else int(pad)
        pooler = getattr(base, "pooler", None)
        if pooler is not None and hasattr(model, "dropout"):  # BERT: classifier(dropout(pooler(h)[CLS]))
            encoder = HFEncoder(base.encoder, config, "pooler", pooler)
            head = _HFHead(model.classifier, model.dropout)
        else:  # a classification head that reads the [CLS] state itself (RoBERTa style)
            encoder = HFEncoder(base.encoder, config, "cls")
            head = _HFHead(model.classifier, None)
        self.points, self.head_name = ("embeddings", "encoder"), "classifier"
        self.mix_stages = (1,)
        self.gap_linear_head = False
        self.min_length = 1
        self._embedding_dim = int(config.hidden_size)
        self._graphs = None
        self._parts = {"stages": [HFEmbedding(base.embeddings, self.pad_id), encoder], "pool": nn.Identity(),
                       "head": head}

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self._graphs is not None:
            self._build()
        return out

    # ------------------------------------------------------------------------------------ staged interface
    @property
    def stages(self) -> tuple:
        return tuple(self._parts["stages"])

    @property
    def head(self):
        return self._parts["head"]

    @property
    def embedding_dim(self) -> int:
        head = self._parts["head"]
        return head.in_features if isinstance(head, nn.Linear) else self._embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        """The model's own forward (its logits; a text model gets the attention mask of its padding)."""
        if self._graphs is None:
            return _logits(self.model(input_ids=x, attention_mask=(x != self.pad_id).long()))
        return _logits(self.model(x))

    def forward_features(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        if not self._verified and start == 0:
            self.verify(x)
        stages = self._parts["stages"]
        n = len(stages)
        stop = n if stop is None else stop
        for stage in stages[start:stop]:
            x = stage(x)
        if stop == n and start < n and self._graphs is not None and x.dim() == 3:
            self._tokens = True
            x = x.transpose(1, 2).unsqueeze(-1)  # tokens (B, T, D) -> map (B, D, T, 1)
        return x

    def pool(self, fmap: Tensor) -> Tensor:
        if self._tokens and fmap.dim() == 4:
            fmap = fmap.squeeze(-1).transpose(1, 2)
        return self._parts["pool"](fmap)

    # ------------------------------------------------------------------------------------------ checking
    @torch.no_grad()
    def verify(self, x: Tensor, tol: float = 1e-4) -> float:
        """Check ``head(pool(stages(x)))`` against the model's own output on (up to 4 of) ``x``, in eval mode;
        set ``gap_linear_head`` and the embedding size. Returns the largest difference; raises if too large."""
        x = x[:4]
        modes = [(m, m.training) for m in self.modules()]
        self._verified = True
        self.eval()
        try:
            with torch.autocast(x.device.type, enabled=False):
                ref = self.forward(x).float()
                fmap = self.forward_features(x)
                z = self.pool(fmap)
                out = self.head(z).float()
        except Exception:
            self._verified = False
            raise
        finally:
            for m, mode in modes:
                m.training = mode
        if out.shape != ref.shape:
            self._verified = False
            raise AdapterError(f"the staged path gives logits of shape {tuple(out.shape)}, the model "
                               f"{tuple(ref.shape)}: check the head {self.head_name!r}")
        diff = float((out - ref).abs().max()) if out.numel() else 0.0
        if diff > tol * (1.0 + float(ref.abs().max())):
            self._verified = False
            raise AdapterError(f"the stages {list(self.points)} -> head {self.head_name!r} do not reproduce "
                               f"{type(self.model).__name__}'s output (max difference {diff:.3g}); the forward does "
                               f"more than the traced pieces (name other points)")
        self._embedding_dim = int(z.shape[-1])
        if self._graphs is not None:
            gap = fmap.float().mean((2, 3)) if fmap.dim() == 4 else None
            self.gap_linear_head = (isinstance(self.head, nn.Linear) and gap is not None and gap.shape == z.shape
                                    and torch.allclose(z.float(), gap, rtol=1e-4, atol=1e-5))
        return diff

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, points={list(self.points)}, head={self.head_name!r}"


def stage(model: nn.Module, points=None, head: str | None = None, **kwargs) -> StagedNet:
    """``model`` with the staged interface: a :class:`StagedNet` as is, anything else through
    :class:`StagedAdapter` (mixing points found for known layouts, or named by ``points`` and ``head``)."""
    if isinstance(model, StagedNet) and points is None and head is None:
        return model
    return StagedAdapter(model, points, head, **kwargs)
