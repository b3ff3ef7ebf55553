"""The Pik-Fix network: SPHist, similarity, each sub-net and the whole model on odd sizes."""

import pytest
import torch

from pikfix.config import ModelConfig, preset_config
from pikfix.model import build_model
from pikfix.nets.similarity import similarity_rows, warp
from pikfix.nets.sphist import SPHist

H, W = 67, 129  # deliberately not multiples of 32


@pytest.fixture(scope="module", params=["tiny", "lite", "paper"])
def model(request):
    config = preset_config(request.param)
    if request.param == "paper":
        config.similarity.backbone_weights = "none"  # shapes only: tests never need the Oxford weights
    return build_model(config).eval()


def _inputs(h=H, w=W, rh=50, rw=71):
    l = torch.rand(1, 1, h, w) * 2 - 1
    ref_l = torch.rand(1, 1, rh, rw) * 2 - 1
    ref_ab = torch.rand(1, 2, rh, rw) * 1.2 - 0.6
    return l, ref_l, ref_ab


def test_sphist_sums_to_one_over_bins_and_passes_gradients():
    hist = SPHist(bins=16, sigma=0.1)
    ab = (torch.rand(2, 2, 9, 11) * 2 - 1).requires_grad_(True)
    h = hist(ab)
    assert h.shape == (2, 32, 9, 11)
    sums = h.view(2, 2, 16, 9, 11).sum(dim=2)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    (h * torch.randn_like(h)).sum().backward()
    assert ab.grad is not None and ab.grad.abs().sum() > 0
    assert hist.centres.grad is not None and hist.centres.grad.abs().sum() > 0


def test_sphist_peaks_at_the_pixel_value():
    hist = SPHist(bins=10, sigma=0.05)
    ab = torch.full((1, 2, 1, 1), 0.3)
    h = hist(ab).view(2, 10)
    centres = hist.centres.detach()
    for c in range(2):
        assert torch.argmin((centres[c] - 0.3).abs()) == torch.argmax(h[c])


def test_sphist_pooled_is_a_distribution():
    pooled = SPHist(bins=8).pooled(torch.rand(3, 2, 5, 5) * 2 - 1)
    assert pooled.shape == (3, 2, 8)
    assert torch.allclose(pooled.sum(-1), torch.ones(3, 2), atol=1e-5)


def test_similarity_rows_are_softmax_normalised():
    q = torch.nn.functional.normalize(torch.randn(2, 7, 5), dim=2)
    r = torch.nn.functional.normalize(torch.randn(2, 11, 5), dim=2)
    attn, best = similarity_rows(q, r, temperature=0.05)
    assert attn.shape == (2, 7, 11)
    assert (attn >= 0).all()
    assert torch.allclose(attn.sum(-1), torch.ones(2, 7), atol=1e-5)
    assert torch.allclose(best, torch.bmm(q, r.transpose(1, 2)).amax(-1))


def test_warp_chunking_does_not_change_the_result():
    feat, ref_feat = torch.randn(1, 6, 5, 7), torch.randn(1, 6, 4, 3)
    hist = torch.softmax(torch.randn(1, 8, 4, 3), dim=1)
    whole, conf = warp(feat, [ref_feat], [hist], 0.05, max_elements=10**9)
    chunked, conf2 = warp(feat, [ref_feat], [hist], 0.05, max_elements=12)  # 1 query row per chunk
    assert torch.allclose(whole, chunked, atol=1e-6) and torch.allclose(conf, conf2)
    # Each warped histogram is a convex mix of reference histograms: still sums to 1.
    assert torch.allclose(whole.sum(1), torch.ones(1, 5, 7), atol=1e-5)


def test_warp_finds_an_identical_reference():
    feat = torch.randn(1, 16, 4, 4)
    hist = torch.eye(16).view(1, 16, 4, 4)  # position v has its own one-hot "colour"
    warped, conf = warp(feat, [feat.clone()], [hist], temperature=0.01, max_elements=1 << 20)
    assert torch.allclose(warped, hist, atol=1e-3)
    assert torch.allclose(conf, torch.ones_like(conf), atol=1e-5)


def test_warp_over_several_references_takes_each_region_from_its_match():
    # Two references of different sizes, each holding half of the input's positions: every
    # input position must find its own feature (and so its own colour) in whichever holds it.
    feat = torch.randn(1, 16, 4, 4)
    hist = torch.eye(16).view(1, 16, 4, 4)
    flat_f, flat_h = feat.flatten(2), hist.flatten(2)
    refs = [flat_f[..., :6].reshape(1, 16, 2, 3), flat_f[..., 6:].reshape(1, 16, 2, 5)]
    ref_hists = [flat_h[..., :6].reshape(1, 16, 2, 3), flat_h[..., 6:].reshape(1, 16, 2, 5)]
    # Centring is per reference, so compare with the features each reference is centred on.
    warped, conf = warp(feat, refs, ref_hists, temperature=0.01, max_elements=1 << 20)
    assert warped.shape == (1, 16, 4, 4) and conf.shape == (1, 1, 4, 4)
    assert torch.equal(warped.flatten(2).argmax(1), torch.arange(16).view(1, 16))
    assert torch.allclose(warped.sum(1), torch.ones(1, 4, 4), atol=1e-5)


def test_warp_over_several_references_is_chunked_like_one():
    feat = torch.randn(2, 6, 5, 7)
    refs = [torch.randn(2, 6, 4, 3), torch.randn(2, 6, 2, 2), torch.randn(2, 6, 3, 5)]
    hists = [torch.softmax(torch.randn(2, 8, *r.shape[-2:]), dim=1) for r in refs]
    keys = sum(r.shape[-1] * r.shape[-2] for r in refs)
    whole, conf = warp(feat, refs, hists, 0.05, max_elements=10**9)
    # One query row per chunk: the matrix in memory is never larger than B x 1 x keys.
    chunked, conf2 = warp(feat, refs, hists, 0.05, max_elements=2 * keys)
    assert torch.allclose(whole, chunked, atol=1e-6) and torch.allclose(conf, conf2)


def test_warp_chunks_pass_gradients_as_one_pass():
    """Chunks are written into one output in place: training must still get the same gradients."""
    grads = []
    for max_elements in (10**9, 2 * 12):
        torch.manual_seed(0)
        feat = torch.randn(2, 6, 5, 7, requires_grad=True)
        ref = torch.randn(2, 6, 4, 3, requires_grad=True)
        hist = torch.softmax(torch.randn(2, 8, 4, 3), dim=1).requires_grad_()
        warped, conf = warp(feat, [ref], [hist], 0.05, max_elements=max_elements)
        (warped.square().sum() + conf.sum()).backward()
        grads.append([feat.grad, ref.grad, hist.grad])
    for whole, chunked in zip(*grads):
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)


def test_chunk_rows_bound_the_similarity_matrix(monkeypatch):
    import pikfix.nets.similarity as sim

    seen = []
    real = sim.similarity_rows

    def spy(query, ref, temperature):
        seen.append(query.shape[0] * query.shape[1] * ref.shape[1])
        return real(query, ref, temperature)

    monkeypatch.setattr(sim, "similarity_rows", spy)
    refs = [torch.randn(1, 4, 6, 6) for _ in range(3)]  # 108 keys in all
    warp(torch.randn(1, 4, 8, 8), refs, [torch.rand(1, 8, 6, 6)] * 3, 0.05, max_elements=1000)
    assert seen and max(seen) <= 1000 and len(seen) == 8  # 9 rows of 108 keys per chunk


def test_model_colorizes_from_several_references_of_different_sizes(model):
    l, ref_l, ref_ab = _inputs()
    refs_l = [ref_l, ref_l[..., :40, :50], torch.rand(1, 1, 70, 30) * 2 - 1]
    refs_ab = [ref_ab, ref_ab[..., :40, :50], torch.rand(1, 2, 70, 30) * 0.4 - 0.2]
    with torch.no_grad():
        ab, conf = model.colorize(l, refs_l, refs_ab)
        single, _ = model.colorize(l, ref_l, ref_ab)
        same, _ = model.colorize(l, [ref_l], [ref_ab])
    assert ab.shape == (1, 2, H, W) and len(conf) == 4 and torch.isfinite(ab).all()
    assert torch.equal(single, same)  # a lone tensor is the one-reference case
    with pytest.raises(ValueError, match="reference"):
        model.colorize(l, refs_l, refs_ab[:2])


def test_restoration_subnet_odd_size(model):
    l = torch.rand(1, 1, H, W) * 2 - 1
    with torch.no_grad():
        out = model.restore(l)
    assert out.l.shape == l.shape and torch.isfinite(out.l).all()
    # Every preset has the damage detector; its mask is a probability map of the input's size.
    assert out.mask_logits.shape == l.shape and out.mask.shape == l.shape
    assert float(out.mask.min()) >= 0.0 and float(out.mask.max()) <= 1.0


def test_similarity_subnet_odd_size(model):
    l, ref_l, ref_ab = _inputs(64, 128, 64, 96)
    sizes = [(16, 32), (8, 16), (4, 8), (2, 4)]
    with torch.no_grad():
        hists, conf = model.similarity(l, [ref_l], [model.reference_histograms(ref_ab)], sizes)
    bins = model.config.colorization.bins
    for (h, w), hist, c in zip(sizes, hists, conf):
        assert hist.shape == (1, 2 * bins, h, w)
        assert c.shape == (1, 1, h, w) and (c.abs() <= 1 + 1e-5).all()


def test_colorization_and_whole_model_odd_size(model):
    l, ref_l, ref_ab = _inputs()
    with torch.no_grad():
        out = model(l, ref_l, ref_ab)
    assert out.l.shape == (1, 1, H, W)
    assert out.ab.shape == (1, 2, H, W)
    assert out.ab.abs().max() <= 1.0
    assert [tuple(c.shape[-2:]) for c in out.confidence] == [(24, 40), (12, 20), (6, 10), (3, 5)]


def test_whole_model_backpropagates_to_every_trainable_subnet():
    model = build_model("tiny").train()
    l, ref_l, ref_ab = _inputs(40, 56, 33, 47)
    out = model(l, ref_l, ref_ab)
    (out.l.mean() + out.ab.abs().mean()).backward()
    for name in ("restoration", "similarity", "colorization", "sphist"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_pretrained_backbone_is_frozen_in_lite():
    model = build_model("lite").train()
    backbone = model.similarity.backbone
    assert backbone.frozen and not backbone.training
    assert all(not p.requires_grad for p in backbone.parameters())


def test_config_round_trip_and_unknown_keys():
    cfg = preset_config("lite")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["colorization"]["nope"] = 1
    with pytest.raises(ValueError, match="nope"):
        ModelConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
