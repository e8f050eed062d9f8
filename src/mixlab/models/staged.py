"""The staged-network interface that feature-space methods hook into.

A :class:`StagedNet` is ``head(pool(stages[-1](...stages[0](x))))``:

* ``stages``: ``nn.ModuleList``; mixing "at stage k" means mixing the output of ``stages[:k]`` (k = 0 is the
  input). ``mix_stages`` lists the stages Manifold Mixup draws from by default.
* ``forward_features(x, start, stop)``: run ``stages[start:stop]``; with the defaults it returns the last
  feature map ``(B, C, h, w)`` (used for CAMs and by AlignMixup / Dense MultiMix).
* ``pool(fmap)``: the embedding ``(B, D)`` before the classifier (MultiMix mixes here).
* ``head``: the classifier, ``(B, D) -> (B, num_classes)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StagedNet(nn.Module):
    stages: nn.ModuleList
    head: nn.Module
    mix_stages: tuple[int, ...] = (0, 1, 2)
    #: True when ``pool`` is global average pooling and ``head`` one linear layer, so the classifier can be
    #: applied at every spatial position and CAMs are exact (Zhou et al. 2016).
    gap_linear_head: bool = True

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features if isinstance(self.head, nn.Linear) else self._embedding_dim

    def forward_features(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def pool(self, fmap: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def embed(self, x: Tensor) -> Tensor:
        """Embedding before the classifier, ``(B, D)``."""
        return self.pool(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.forward_features(x)))

    def position_logits(self, fmap: Tensor) -> Tensor:
        """Classifier applied at each spatial position: ``(B, C, h, w) -> (B, h*w, classes)``."""
        if not self.gap_linear_head:
            raise NotImplementedError(f"{type(self).__name__} has no linear head on pooled features")
        return self.head(fmap.flatten(2).transpose(1, 2))

    def cam(self, fmap: Tensor, classes: Tensor) -> Tensor:
        """Class activation maps ``(B, h, w)`` for ``classes`` (B,), from the last feature map.

        Exact CAM (``sum_k w_ck A_k``) for GAP + linear heads; Grad-CAM (Selvaraju et al. 2017) otherwise.
        Not normalised; no gradient flows out of it.
        """
        with torch.enable_grad():
            if self.gap_linear_head:
                w = self.head.weight[classes]  # (B, C)
                return torch.einsum("bc,bchw->bhw", w, fmap).detach()
            a = fmap.detach().requires_grad_(True)
            score = self.head(self.pool(a)).gather(1, classes[:, None]).sum()
            (grad,) = torch.autograd.grad(score, a)
            weights = grad.mean((2, 3))
            return F.relu(torch.einsum("bc,bchw->bhw", weights, a)).detach()
