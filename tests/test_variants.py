"""Each variant loss against its paper's formula, written out independently, and against
TRL 1.16's implementation where TRL has one (called on the same tensors)."""

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dpolab import losses, variants

BETA = 0.3
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(autouse=True)
def fresh_losses(monkeypatch):
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(losses, "LOSSES", dict(losses.LOSSES))


@pytest.fixture
def logps():
    g = torch.Generator().manual_seed(0)
    # mean per-token log-probs are in (-inf, 0); sequence sums too
    pc, pr, rc, rr = (-torch.rand(16, generator=g, dtype=torch.float64) * 4 - 0.05
                      for _ in range(4))
    return pc, pr, rc, rr


def h_of(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def test_register_makes_every_variant_a_trainer_loss(logps):
    for name, fn in variants.VARIANTS.items():
        assert variants.register(name) == name
        out, _, _ = losses.preference_loss(*logps, BETA, loss_type=name)
        assert torch.equal(out, fn(*logps, BETA))


def test_cdpo_is_the_smoothed_dpo_loss(logps):
    eps, h = 0.2, h_of(*logps)
    want = [-(1 - eps) * math.log(1 / (1 + math.exp(-BETA * x)))
            - eps * math.log(1 / (1 + math.exp(BETA * x))) for x in h.tolist()]
    assert torch.allclose(variants.cdpo_loss(*logps, BETA, label_smoothing=eps),
                          torch.tensor(want, dtype=torch.float64), atol=1e-10)


def test_trl_sigmoid_ignores_label_smoothing_so_cdpo_differs_from_it(logps):
    # TRL's loss_type="sigmoid" is plain DPO whatever label_smoothing says (TRL >= 0.29)
    plain = -F.logsigmoid(BETA * h_of(*logps))
    assert torch.allclose(variants.cdpo_loss(*logps, BETA, label_smoothing=0.0), plain)
    assert not torch.allclose(variants.cdpo_loss(*logps, BETA, label_smoothing=0.2), plain)


def test_robust_dpo_is_unbiased_under_label_flips(logps):
    # E over flips with rate eps of the robust loss == clean DPO loss (Chowdhury et al. 2024)
    pc, pr, rc, rr = logps
    eps = 0.3
    kept = variants.robust_dpo_loss(pc, pr, rc, rr, BETA, label_smoothing=eps)
    flipped = variants.robust_dpo_loss(pr, pc, rr, rc, BETA, label_smoothing=eps)
    expected = (1 - eps) * kept + eps * flipped
    assert torch.allclose(expected, -F.logsigmoid(BETA * h_of(*logps)), atol=1e-10)
    with pytest.raises(ValueError, match="label_smoothing"):
        variants.robust_dpo_loss(*logps, BETA, label_smoothing=0.5)


def test_robust_matches_trl(logps):
    # transcribed from trl/trainer/dpo_trainer.py, loss_type == "robust" (the branch reads
    # trainer state inside _compute_loss, so it cannot be called on its own)
    import trl  # noqa: F401
    src = _trl_source("trainer/dpo_trainer.py")
    assert "(clean_loss_term - flipped_loss_term) / (1 - 2 * self.label_smoothing)" in src
    eps, d = 0.15, h_of(*logps)
    clean = -(1 - eps) * F.logsigmoid(BETA * d)
    flipped = -eps * F.logsigmoid(-BETA * d)
    assert torch.allclose(variants.robust_dpo_loss(*logps, BETA, label_smoothing=eps),
                          (clean - flipped) / (1 - 2 * eps), atol=1e-10)


def _cpo(loss_type, beta, gamma=0.0):
    from trl.experimental.cpo import CPOTrainer
    stub = SimpleNamespace(alpha=0.0, loss_type=loss_type, simpo_gamma=gamma, beta=beta,
                           label_smoothing=0.0, accelerator=SimpleNamespace(device="cpu"))
    return lambda c, r: CPOTrainer.cpo_loss(stub, c, r)[0]


def test_simpo_formula_and_trl(logps):
    pc, pr, rc, rr = logps
    beta, gamma = 2.0, 0.7
    ours = variants.simpo_loss(pc, pr, rc, rr, beta, gamma)
    assert torch.allclose(ours, torch.log1p(torch.exp(-(beta * (pc - pr) - gamma))), atol=1e-10)
    assert torch.allclose(ours, _cpo("simpo", beta, gamma)(pc, pr), atol=1e-10)
    # reference-free: the reference log-probs change nothing
    assert torch.equal(ours, variants.simpo_loss(pc, pr, rc * 3, rr - 1, beta, gamma))


def test_hinge_and_ipo_without_reference_are_trl_cpo(logps):
    pc, pr, _, _ = logps
    zero = torch.zeros_like(pc)
    assert torch.allclose(variants.VARIANTS["hinge"](pc, pr, zero, zero, BETA),
                          _cpo("hinge", BETA)(pc, pr), atol=1e-10)
    assert torch.allclose(variants.VARIANTS["ipo"](pc, pr, zero, zero, BETA),
                          _cpo("ipo", BETA)(pc, pr), atol=1e-10)


def test_log_odds_ratio_is_the_odds_of_the_mean_token_probability(logps):
    pc, pr, _, _ = logps
    p_w, p_l = pc.exp(), pr.exp()
    want = torch.log(p_w / (1 - p_w)) - torch.log(p_l / (1 - p_l))
    assert torch.allclose(variants.log_odds_ratio(pc, pr), want, atol=1e-9)
    # stable near log p = 0 and far below it
    tiny = torch.tensor([-1e-7, -80.0], dtype=torch.float64)
    assert torch.isfinite(variants.log1mexp(tiny)).all()


def test_orpo_formula_and_trl(logps):
    from trl.experimental.orpo import ORPOTrainer
    pc, pr, rc, rr = logps
    lam = 0.25
    ours = variants.orpo_loss(pc, pr, rc, rr, lam)
    want = -pc - lam * F.logsigmoid(variants.log_odds_ratio(pc, pr))
    assert torch.allclose(ours, want, atol=1e-10)
    stub = SimpleNamespace(beta=lam, accelerator=SimpleNamespace(device="cpu"))
    trl_or = ORPOTrainer.odds_ratio_loss(stub, pc, pr)[0]  # beta * log s(log odds), per pair
    # TRL: loss = nll - mean(beta * log s(...)); our mean is mean(nll) - the same term
    assert torch.allclose(ours.mean(), (-pc).mean() - trl_or.mean(), atol=1e-6)


def test_kto_formula_and_its_baseline(logps):
    pc, pr, rc, rr = logps
    r_w, r_l = pc - rc, pr - rr
    z0 = max(torch.cat([r_w, r_l]).mean().item(), 0.0)
    want = (1 - torch.sigmoid(BETA * (r_w - z0))) + (1 - torch.sigmoid(BETA * (z0 - r_l)))
    assert torch.allclose(variants.kto_loss(*logps, BETA), want, atol=1e-10)
    # the baseline carries no gradient
    pc_ = pc.clone().requires_grad_()
    variants.kto_loss(pc_, pr, rc, rr, BETA, kl=None).sum().backward()
    direct = -BETA * torch.sigmoid(BETA * (r_w - z0)) * (1 - torch.sigmoid(BETA * (r_w - z0)))
    assert torch.allclose(pc_.grad, direct, atol=1e-10)


def test_kto_matches_trl_given_the_same_kl(logps):
    # transcribed from trl/trainer/kto_trainer.py (loss_type == "kto"): TRL averages over
    # the 2B responses, we sum the two halves per pair
    src = _trl_source("trainer/kto_trainer.py")
    assert "1 - F.sigmoid(self.beta * (chosen_logratios - kl))" in src
    assert "1 - F.sigmoid(self.beta * (kl - rejected_logratios))" in src
    pc, pr, rc, rr = logps
    kl = torch.tensor(0.4, dtype=torch.float64)
    trl_losses = torch.cat([1 - torch.sigmoid(BETA * ((pc - rc) - kl)),
                            1 - torch.sigmoid(BETA * (kl - (pr - rr)))])
    ours = variants.kto_loss(pc, pr, rc, rr, BETA, kl=kl)
    assert torch.allclose(ours.mean() / 2, trl_losses.mean(), atol=1e-10)


def test_register_with_options_makes_a_named_partial(logps):
    name = variants.register("robust", label_smoothing=0.2)
    assert name == "robust(label_smoothing=0.2)"
    out, _, _ = losses.preference_loss(*logps, BETA, loss_type=name)
    assert torch.allclose(out, variants.robust_dpo_loss(*logps, BETA, label_smoothing=0.2))
    with pytest.raises(ValueError, match="unknown loss_type 'nope'"):
        variants.register("nope", x=1)


def _trl_source(rel: str) -> str:
    import pathlib

    import trl
    return (pathlib.Path(trl.__file__).parent / rel).read_text()


def test_label_smoothing_has_one_source_of_truth(logps):
    """``DPOConfig(label_smoothing=0.0)`` means eps = 0 (robust DPO with eps 0 is plain DPO),
    not the loss function's default 0.1; ``None`` means the loss's own value; a value fixed
    by ``register`` cannot be overridden silently."""
    from dpolab import dpo

    variants.register("robust")
    zero = dpo.DPOConfig(loss_type="robust", label_smoothing=0.0)
    assert zero.loss_options() == {"label_smoothing": 0.0}
    assert zero.effective_label_smoothing() == 0.0
    out, _, _ = losses.preference_loss(*logps, BETA, loss_type="robust", **zero.loss_options())
    assert torch.allclose(out, losses.dpo_loss(*logps, BETA))
    default = dpo.DPOConfig(loss_type="robust")
    assert default.loss_options() == {} and default.effective_label_smoothing() == 0.1
    fixed = variants.register("robust", label_smoothing=0.2)
    assert dpo.DPOConfig(loss_type=fixed).effective_label_smoothing() == 0.2
    with pytest.raises(ValueError, match="fixes label_smoothing=0.2"):
        dpo.DPOConfig(loss_type=fixed, label_smoothing=0.3).loss_options()
    assert dpo.DPOConfig().effective_label_smoothing() == 0.0  # sigmoid: plain DPO


def test_dpop_adds_a_penalty_only_when_the_chosen_response_falls(logps):
    pc, pr, rc, rr = logps
    lam = 5.0
    penalty = torch.clamp(rc - pc, min=0)
    want = -F.logsigmoid(BETA * (h_of(pc, pr, rc, rr) - lam * penalty))
    assert torch.allclose(variants.dpop_loss(*logps, BETA, lam=lam), want, atol=1e-12)
    up = rc + 0.5  # every chosen response above the reference: DPOP is DPO
    assert torch.allclose(variants.dpop_loss(up, pr, rc, rr, BETA),
                          losses.dpo_loss(up, pr, rc, rr, BETA))
    assert (variants.dpop_loss(*logps, BETA) >= losses.dpo_loss(*logps, BETA) - 1e-12).all()


def test_rpo_is_dpo_plus_the_chosen_nll(logps):
    pc, pr, rc, rr = logps
    want = losses.dpo_loss(pc, pr, rc, rr, BETA) + 0.2 * (-pc)
    assert torch.allclose(variants.rpo_loss(*logps, BETA, alpha=0.2), want, atol=1e-12)


def test_apo_zero_formula_and_trl(logps):
    pc, pr, rc, rr = logps
    want = (1 - torch.sigmoid(BETA * (pc - rc))) + torch.sigmoid(BETA * (pr - rr))
    assert torch.allclose(variants.apo_zero_loss(*logps, BETA), want, atol=1e-12)
    src = _trl_source("trainer/dpo_trainer.py")
    assert "losses_chosen = 1 - torch.sigmoid(self.beta * chosen_logratios)" in src
    assert "losses_rejected = torch.sigmoid(self.beta * rejected_logratios)" in src
    # unlike DPO, which sees only the margin, APO sees where each response went
    assert torch.allclose(losses.dpo_loss(pc - 1, pr - 1, rc, rr, BETA),
                          losses.dpo_loss(*logps, BETA))
    assert not torch.allclose(variants.apo_zero_loss(pc - 1, pr - 1, rc, rr, BETA),
                              variants.apo_zero_loss(*logps, BETA))
