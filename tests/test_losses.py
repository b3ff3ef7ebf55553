"""Training losses (paper eq. 5-10): values hand-checked on tiny tensors, weights, gradients."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from pikfix.backbones import WeightsUnavailableError, hub_cache_file
from pikfix.training.losses import (
    LossConfig,
    PatchDiscriminator,
    PerceptualLoss,
    PikFixLoss,
    emd_loss,
    emd_per_sample,
    masked_emd,
)
from pikfix.model import PikFixOutput
from pikfix.nets.sphist import SPHist


def one_hot_hist(index: int, bins: int = 5) -> torch.Tensor:
    hist = torch.zeros(1, 1, bins)
    hist[0, 0, index] = 1.0
    return hist


@pytest.fixture(scope="module")
def lite0_perceptual() -> PerceptualLoss:
    return PerceptualLoss("efficientnet_lite0")


def test_emd_of_identical_histograms_is_zero():
    p = torch.softmax(torch.randn(2, 2, 8), dim=-1)
    assert emd_loss(p, p.clone()).item() == 0.0


def test_emd_grows_with_the_shift():
    values = [emd_loss(one_hot_hist(0), one_hot_hist(s)).item() for s in (1, 2, 3)]
    assert values == pytest.approx([1.0, 2.0, 3.0])


def test_emd_hand_computed():
    p = torch.tensor([[[0.5, 0.5, 0.0]]])
    q = torch.tensor([[[0.2, 0.3, 0.5]]])
    # CDFs (0.5, 1.0, 1.0) and (0.2, 0.5, 1.0): 0.3^2 + 0.5^2 + 0^2.
    assert emd_loss(p, q).item() == pytest.approx(0.34)
    # Mean over batch and channels: a second, identical pair halves it.
    assert emd_loss(torch.cat([p, q]), torch.cat([q, q])).item() == pytest.approx(0.17)


def test_masked_emd_counts_only_references_that_share_the_colours():
    truth = torch.cat([one_hot_hist(1), one_hot_hist(1)])
    reference = torch.cat([one_hot_hist(1) * 0.9 + one_hot_hist(2) * 0.1, one_hot_hist(4)])  # close, far
    assert emd_per_sample(truth, reference).tolist() == pytest.approx([0.01, 3.0])
    pred = torch.cat([one_hot_hist(3), one_hot_hist(0)])
    expected = emd_per_sample(pred[:1], reference[:1]).item() / 2  # the far sample adds 0
    assert masked_emd(pred, truth, reference, shared_colours=0.1).item() == pytest.approx(expected)
    assert masked_emd(pred, truth, reference, shared_colours=0.001).item() == 0.0


def _emd_only_loss() -> PikFixLoss:
    return PikFixLoss(LossConfig(alpha=0.0, beta=0.0, lam=1.0, gamma=0.0, eta=0.0), SPHist(bins=8))


def test_emd_term_ignores_a_reference_that_does_not_share_the_colours():
    # The finding this fixes: a perfect prediction used to be pulled towards a random reference.
    truth_ab = torch.full((2, 2, 16, 16), -0.3)
    out = PikFixOutput(l=torch.zeros(2, 1, 16, 16), ab=truth_ab.clone(), confidence=[])
    random_ref = torch.full((2, 2, 16, 16), 0.5)
    _, terms = _emd_only_loss().generator_loss(out, out.l, truth_ab, random_ref, None)
    assert terms["emd"] == 0.0
    old = emd_loss(SPHist(bins=8).pooled(truth_ab), SPHist(bins=8).pooled(random_ref)).item()
    assert old > 0.5  # what the unmasked eq. 7 charged for this perfect prediction


def test_emd_term_follows_a_reference_that_shares_the_colours():
    truth_ab = torch.full((1, 2, 16, 16), -0.3)
    ref_ab = truth_ab + 0.02  # the same colours, slightly shifted (a same-image reference)
    sphist = SPHist(bins=8)
    out = PikFixOutput(l=torch.zeros(1, 1, 16, 16), ab=truth_ab.clone(), confidence=[])
    _, terms = PikFixLoss(LossConfig(alpha=0.0, beta=0.0, lam=1.0, gamma=0.0, eta=0.0), sphist).generator_loss(
        out, out.l, truth_ab, ref_ab, None)
    expected = emd_loss(sphist.pooled(truth_ab), sphist.pooled(ref_ab)).item()
    assert expected > 0 and terms["emd"] == pytest.approx(expected, rel=1e-5)


def test_emd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="histograms"):
        emd_loss(torch.ones(1, 2, 4) / 4, torch.ones(1, 2, 5) / 5)


def test_config_round_trip_and_validation():
    config = LossConfig(beta=0.0, perceptual="none", gan=False)
    assert LossConfig.from_dict(config.to_dict()) == config
    assert LossConfig().to_dict()["lam"] == 0.5
    with pytest.raises(ValueError, match=r"unknown loss config key\(s\): lamda"):
        LossConfig.from_dict({"lamda": 0.5})
    with pytest.raises(ValueError, match="eta"):
        LossConfig.from_dict({"eta": -0.1})
    with pytest.raises(ValueError, match="perceptual"):
        LossConfig.from_dict({"perceptual": "vgg16"})


def test_l1_terms_hand_checked():
    loss = PikFixLoss(LossConfig(beta=0.0, lam=0.0, eta=0.0), SPHist(bins=4))
    out = PikFixOutput(l=torch.zeros(1, 1, 2, 2), ab=torch.zeros(1, 2, 2, 2), confidence=[])
    target_l = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    target_ab = torch.full((1, 2, 2, 2), 0.25)
    total, terms = loss.generator_loss(out, target_l, target_ab, target_ab, None)
    assert terms == pytest.approx({"rec_l": 0.625, "rec_ab": 0.25})
    assert total.item() == pytest.approx(0.875)
    with pytest.raises(ValueError, match="differ in shape"):
        loss.generator_loss(out, target_l[..., :1], target_ab, target_ab, None)


def test_perceptual_lite0_is_zero_only_for_identical_inputs(lite0_perceptual):
    target = torch.rand(1, 1, 32, 32) * 2 - 1
    assert lite0_perceptual(target, target.clone()).item() == 0.0
    assert lite0_perceptual(target.flip(-1), target).item() > 0.0
    assert lite0_perceptual.network == "efficientnet_lite0"
    assert not any(p.requires_grad for p in lite0_perceptual.parameters())
    assert not lite0_perceptual.train().features.training


def test_perceptual_gradient_reaches_the_prediction(lite0_perceptual):
    pred = (torch.rand(1, 1, 32, 32) * 1.6 - 0.8).requires_grad_()
    lite0_perceptual(pred, torch.zeros(1, 1, 32, 32)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_auto_falls_back_without_vgg19_weights(no_vgg19_weights):
    loss = PerceptualLoss("auto")
    assert loss.network == "efficientnet_lite0"
    assert f"VGG19 weights not found at {no_vgg19_weights}; install them once with `make weights`" in loss.description


def test_vgg19_without_weights_raises(no_vgg19_weights):
    with pytest.raises(WeightsUnavailableError, match="make weights"):
        PerceptualLoss("vgg19")
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        PerceptualLoss("vgg19", "torchvision")


def test_auto_uses_torchvision_vgg19_weights_from_the_hub_cache(no_vgg19_weights):
    trunk = make_layers(cfgs["E"])
    path = hub_cache_file(VGG19_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, path)
    loss = PerceptualLoss("auto", "torchvision")
    assert loss.network == "vgg19" and "imagenet preprocessing (torchvision VGG19" in loss.description
    assert loss.feature_scale == 1.0
    assert torch.equal(loss.features.layers[30].weight, trunk[30].weight)  # conv5_2 loaded
    feats = loss.features(torch.zeros(1, 1, 32, 32))
    assert [f.shape[1:] for f in feats] == [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]


@pytest.mark.parametrize("norm", ["spectral", "instance"])
def test_discriminator_outputs_a_patch_map(norm):
    disc = PatchDiscriminator(width=8, norm=norm)
    assert disc(torch.zeros(2, 1, 64, 64), torch.zeros(2, 2, 64, 64)).shape == (2, 1, 6, 6)  # 64/8 - 2


@pytest.mark.parametrize("norm", ["instance", "spectral"])
def test_discriminator_loss_separates_real_from_fake(norm):
    disc = PatchDiscriminator(width=8, norm=norm)
    l = torch.rand(2, 1, 32, 32) * 2 - 1
    real_ab = torch.rand(2, 2, 32, 32) * 0.6 - 0.3
    fake_ab = torch.zeros(2, 2, 32, 32)
    loss = PikFixLoss(LossConfig(beta=0.0), SPHist(bins=4))

    def mean_logits() -> tuple[float, float]:
        disc.eval()  # measure without a spectral-norm power-iteration update
        with torch.no_grad():
            real, fake = disc(l, real_ab).mean().item(), disc(l, fake_ab).mean().item()
        disc.train()
        return real, fake

    real_before, fake_before = mean_logits()
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        d_loss, terms = loss.discriminator_loss(disc, l, real_ab, fake_ab)
        d_loss.backward()
        opt.step()
        losses.append(d_loss.item())
    real_after, fake_after = mean_logits()
    assert set(terms) == {"d_real", "d_fake"}
    assert losses[-1] < losses[0]
    assert real_after - fake_after > real_before - fake_before
    if norm == "instance":
        # Spectral norm bounds every layer, so there both logits can drift the same way for a
        # few steps while the gap widens; without it they move apart in absolute terms too.
        assert real_after > real_before and fake_after < fake_before


def test_discriminator_loss_does_not_reach_the_generator():
    disc = PatchDiscriminator(width=4, norm="instance")
    pred_ab = torch.zeros(1, 2, 32, 32, requires_grad=True)
    d_loss, _ = PikFixLoss(LossConfig(beta=0.0), SPHist(bins=4)).discriminator_loss(
        disc, torch.zeros(1, 1, 32, 32), torch.ones(1, 2, 32, 32) * 0.1, pred_ab
    )
    d_loss.backward()
    assert pred_ab.grad is None


def test_total_is_the_weighted_sum_of_the_terms(lite0_perceptual):
    config = LossConfig(alpha=1.0, beta=0.2, lam=0.5, gamma=1.0, eta=0.2, perceptual="efficientnet_lite0")
    loss = PikFixLoss(config, SPHist(bins=8))
    loss.perceptual = lite0_perceptual  # reuse the module-scoped network: same choice, faster
    out = PikFixOutput(l=torch.rand(1, 1, 32, 32) * 2 - 1, ab=torch.rand(1, 2, 32, 32) - 0.5, confidence=[])
    target_l, target_ab = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 2, 32, 32) - 0.5
    ref_ab = target_ab[..., ::2, ::2] * 0.95  # shares the target's colours, so the EMD term counts
    total, terms = loss.generator_loss(out, target_l, target_ab, ref_ab, PatchDiscriminator(width=4))
    assert set(terms) == {"rec_l", "perc_l", "emd", "rec_ab", "adv"}
    assert all(v > 0 for v in terms.values())
    weights = {"rec_l": 1.0, "perc_l": 0.2, "emd": 0.5, "rec_ab": 1.0, "adv": 0.2}
    assert total.item() == pytest.approx(sum(weights[k] * v for k, v in terms.items()), rel=1e-5)
    assert terms["rec_l"] == pytest.approx(F.l1_loss(out.l, target_l).item())


def test_zero_weight_and_disabled_terms_are_skipped():
    loss = PikFixLoss(LossConfig(beta=0.2, perceptual="none", lam=0.0, eta=0.0), SPHist(bins=4))
    assert loss.perceptual is None and loss.perceptual_description == "disabled" and not loss.uses_gan
    out = PikFixOutput(l=torch.zeros(1, 1, 8, 8), ab=torch.zeros(1, 2, 8, 8), confidence=[])
    _, terms = loss.generator_loss(out, out.l + 0.5, out.ab, out.ab, None)
    assert set(terms) == {"rec_l", "rec_ab"}
    assert PikFixLoss(LossConfig(beta=0.0, gan=False), SPHist(bins=4)).uses_gan is False


def test_gan_term_needs_a_discriminator():
    loss = PikFixLoss(LossConfig(beta=0.0), SPHist(bins=4))
    out = PikFixOutput(l=torch.zeros(1, 1, 8, 8), ab=torch.zeros(1, 2, 8, 8), confidence=[])
    with pytest.raises(ValueError, match="discriminator"):
        loss.generator_loss(out, out.l, out.ab, out.ab, None)


@pytest.mark.parametrize("term", ["emd", "adv"])
def test_gradients_reach_the_predicted_ab(term):
    only = {"alpha": 0.0, "beta": 0.0, "lam": 0.0, "gamma": 0.0, "eta": 0.0}
    only["lam" if term == "emd" else "eta"] = 1.0
    loss = PikFixLoss(LossConfig(**only), SPHist(bins=8))
    ab = (torch.rand(1, 2, 32, 32) - 0.5).requires_grad_()
    out = PikFixOutput(l=torch.zeros(1, 1, 32, 32), ab=ab, confidence=[])
    ref_ab = torch.full((1, 2, 16, 16), 0.4)
    target_ab = torch.full_like(ab, 0.4)  # the reference shares the target's colours
    disc = PatchDiscriminator(width=4) if term == "adv" else None
    total, terms = loss.generator_loss(out, torch.zeros(1, 1, 32, 32), target_ab, ref_ab, disc)
    assert set(terms) == {term}
    total.backward()
    assert ab.grad is not None and ab.grad.abs().sum() > 0
