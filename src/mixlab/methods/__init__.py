"""Mixing methods. One file per method family; one registry line per method below."""
from ..registry import METHODS
from .base import ERM, InputMixer, Method, MixInfo, as_targets, interpolate, multilabel_bce, soft_cross_entropy

M = "mixlab.methods."
METHODS.register("erm", M + "base:ERM", "no mixing (baseline)", aliases=("none", "baseline"))
METHODS.register("mixup", M + "mixup:Mixup", "Mixup, Zhang et al. 2018")
METHODS.register("cutmix", M + "cutmix:CutMix", "CutMix with area-corrected lambda, Yun et al. 2019")
METHODS.register("bc", M + "bc:BetweenClass", "Between-Class learning (BC; plus=True for BC+), Tokozume et al. 2018")
METHODS.register("manifold", M + "mixup:ManifoldMixup", "Manifold Mixup, Verma et al. 2019", aliases=("manifold-mixup",))
METHODS.register("automix-zhu", M + "automix_zhu:AutoMixZhu", "AutoMix barycenter generator (U-Net + SE), Zhu et al. 2020")
METHODS.register("transformmix", M + "transformmix:TransformMix", "TransformMix: searched STN + mask network under a teacher's CAMs")

__all__ = ["METHODS", "Method", "InputMixer", "ERM", "MixInfo", "as_targets", "interpolate", "soft_cross_entropy",
           "multilabel_bce"]
