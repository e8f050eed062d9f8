"""Mixing methods. One file per method family; one registry line per method below."""
from ..registry import METHODS
from .base import ERM, InputMixer, Method, MixInfo, as_targets, interpolate, multilabel_bce, soft_cross_entropy

M = "mixlab.methods."
METHODS.register("erm", M + "base:ERM", "no mixing (baseline)", aliases=("none", "baseline"))
METHODS.register("mixup", M + "mixup:Mixup", "Mixup, Zhang et al. 2018")
METHODS.register("cutmix", M + "cutmix:CutMix", "CutMix with area-corrected lambda, Yun et al. 2019")
METHODS.register("mixup-cutmix", M + "cutmix:MixupCutmix", "Mixup or CutMix per batch (timm / DeiT recipe)",
                 aliases=("mixup+cutmix",))
METHODS.register("bc", M + "bc:BetweenClass", "Between-Class learning (BC; plus=True for BC+), Tokozume et al. 2018")
METHODS.register("manifold", M + "mixup:ManifoldMixup", "Manifold Mixup, Verma et al. 2019", aliases=("manifold-mixup",))
METHODS.register("opttransmix", M + "opttransmix:OptTransMix", "OptTransMix: Wasserstein barycenters, Zhu et al. 2020")
METHODS.register("opttransmix+mixup", M + "opttransmix:OptTransMixMixup", "OptTransMix + Mixup (AutoMix Table 4)")
METHODS.register("opttransmix+bc", M + "opttransmix:OptTransMixBC", "OptTransMix + BC (AutoMix Table 4)")
METHODS.register("alignmix", M + "alignmix:AlignMixup", "AlignMixup, Venkataramanan et al. 2022", aliases=("alignmixup",))
METHODS.register("multimix", M + "multimix:MultiMix", "MultiMix, Venkataramanan et al. 2023")
METHODS.register("dense-multimix", M + "multimix:DenseMultiMix", "Dense MultiMix, Venkataramanan et al. 2023")
METHODS.register("wordmixup", M + "textmix:WordMixup", "WordMixup: mix word embeddings (text), Guo et al. 2019")
METHODS.register("sentmixup", M + "textmix:SentMixup", "SentMixup: mix the sentence vector (text), Guo et al. 2019")
METHODS.register("amp+wordmixup", M + "amp:amp_wordmixup", "AMP on WordMixup, Liu et al. 2021")
METHODS.register("amp+sentmixup", M + "amp:amp_sentmixup", "AMP on SentMixup, Liu et al. 2021")
METHODS.register("amp+mixup", M + "amp:amp_mixup", "AMP on input Mixup (new: AMP on images)")
METHODS.register("amp+manifold", M + "amp:amp_manifold", "AMP on Manifold Mixup (new)")
METHODS.register("automix-zhu", M + "automix_zhu:AutoMixZhu", "AutoMix barycenter generator (U-Net + SE), Zhu et al. 2020")
METHODS.register("transformmix", M + "transformmix:TransformMix", "TransformMix: searched STN + mask network under a teacher's CAMs")
METHODS.register("saliencymix", M + "saliencymix:SaliencyMix", "SaliencyMix: box at the partner's saliency peak, Uddin et al. 2021")
METHODS.register("resizemix", M + "resizemix:ResizeMix", "ResizeMix: the partner shrunk into a patch, Qin et al. 2020")
METHODS.register("fmix", M + "fmix:FMix", "FMix: masks from low-frequency Fourier noise, Harris et al. 2020")
METHODS.register("gridmix", M + "gridmix:GridMix", "GridMix: grid cells from either image, Baek et al. 2021")
METHODS.register("puzzlemix", M + "puzzlemix:PuzzleMix", "PuzzleMix: saliency graph-cut masks + transport, Kim et al. 2020")
METHODS.register("comixup", M + "comixup:CoMixup", "Co-Mixup: joint saliency mixing of several inputs per output, Kim et al. 2021", aliases=("co-mixup",))

__all__ = ["METHODS", "Method", "InputMixer", "ERM", "MixInfo", "as_targets", "interpolate", "soft_cross_entropy",
           "multilabel_bce"]
