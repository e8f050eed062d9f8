"""Staged models (see :mod:`mixlab.models.staged`). One registry line per model."""
from ..registry import MODELS
from .adapter import StagedAdapter, stage
from .staged import StagedNet

P = "mixlab.models."
MODELS.register("cnn11", P + "cnn11:CNN11", "11-layer CNN of BC learning (AutoMix paper, MNIST / F-MNIST)")
MODELS.register("preactresnet18", P + "resnet:PreActResNet18", "PreActResNet-18, CIFAR variant",
                aliases=("preact-resnet18",))
MODELS.register("resnet18", P + "resnet:ResNet18", "ResNet-18, CIFAR variant")
MODELS.register("bagnet", P + "bagnet:BagNet", "per-instance MLP + mean pool for bags (MIML 9 x 15 features)")
MODELS.register("wrn28-10", P + "resnet:WideResNet", "Wide ResNet 28-10", aliases=("wrn-28-10",))
MODELS.register("kim-cnn", P + "text:KimCNN", "Kim (2014) CNN-rand for sentences (text)")
MODELS.register("bilstm-attn", P + "text:BiLSTMAttention", "BiLSTM with attention, 2 x 512 (text)")
MODELS.register("minilm", P + "minilm:MiniLM", "pre-trained all-MiniLM-L6-v2 encoder (text; optional extra)")

__all__ = ["MODELS", "StagedNet", "StagedAdapter", "stage"]
