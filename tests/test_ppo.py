"""PPO: each implementation detail against its formula, then short runs."""

import copy
import json

import pytest
import torch

from dpolab import evaluate, judge, model, ppo, world
from dpolab import reward_model as RM


def test_gae_matches_a_hand_computed_example():
    # Row 0: three tokens, reward 1 at the end. Row 1: two tokens and one pad position,
    # whose junk reward and value must not leak into the advantages.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.2, -1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.3, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lam A_{t+1}; V_end = 0.
    # Row 0: delta = (0.04, 0.03, 0.3); A2 = 0.3, A1 = 0.03 + 0.45*0.3, A0 = 0.04 + 0.45*A1.
    a1 = 0.03 + 0.45 * 0.3
    expected = torch.tensor([[0.04 + 0.45 * a1, a1, 0.3],
                             [0.37 + 0.45 * -1.3, -1.3, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(ret, expected + values * mask, atol=1e-6)


def test_gae_with_lambda_one_and_gamma_one_is_return_minus_value():
    rewards = torch.randn(4, 6)
    values = torch.randn(4, 6)
    mask = torch.ones(4, 6)
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    returns_to_go = rewards.flip(1).cumsum(1).flip(1)
    assert torch.allclose(ret, returns_to_go, atol=1e-5)
    assert torch.allclose(adv, returns_to_go - values, atol=1e-5)


def test_clipped_surrogate_matches_its_formula():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.75, 0.25, 0.55]]))  # ratios 1.5, 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, -2.0, 3.0]])
    mask = torch.ones(1, 4)
    loss, clipfrac = ppo.policy_loss(new, old, adv, mask, cliprange=0.2)
    # Per token max(-A r, -A clip(r)): A>0, r=1.5 -> -1.2 (clipped); A<0, r=1.5 -> 1.5;
    # A<0, r=0.5 -> 2*0.8 = 1.6 (clipped); A>0, r=1.1 inside the clip -> -3.3.
    assert loss.item() == pytest.approx((-1.2 + 1.5 + 1.6 - 3.3) / 4, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    # Masked tokens count for nothing.
    loss_masked, _ = ppo.policy_loss(new, old, adv, torch.tensor([[1.0, 1, 0, 0]]), 0.2)
    assert loss_masked.item() == pytest.approx((-1.2 + 1.5) / 2, abs=1e-6)


def test_clipped_value_loss_matches_its_formula():
    old = torch.tensor([[0.0, 0.0, 1.0]])
    new = torch.tensor([[0.5, -0.1, 1.0]])
    ret = torch.tensor([[1.0, -1.0, 0.0]])
    loss = ppo.value_loss(new, old, ret, torch.ones(1, 3), cliprange_value=0.2)
    # Token 0: V clipped to 0.2, max((0.5-1)^2, (0.2-1)^2) = 0.64; token 1: inside the
    # clip, 0.81; token 2: 1.0.
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 1.0) / 3, abs=1e-6)


def test_kl_penalty_is_per_token_and_the_score_lands_on_the_last_token():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, -7.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    kl = ppo.per_token_kl(logps, ref, mask)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.0, 0.0]]))
    rewards = ppo.token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.02, -1.0, 0.0]]))


def test_whitening_gives_mean_zero_std_one_on_the_mask_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    w = ppo.whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.pow(2).mean().item() == pytest.approx(1.0, abs=1e-5)
    assert (w[~mask.bool()] == 0).all()
    assert torch.allclose(kept, (x[mask.bool()] - 3.0) / torch.tensor(2.0).sqrt(), atol=1e-5)


def test_adaptive_kl_controller_moves_towards_the_target():
    fixed = ppo.KLController(0.1)
    fixed.update(50.0, 64)
    assert fixed.value == 0.1
    ctl = ppo.KLController(0.1, target=2.0, horizon=1000)
    ctl.update(10.0, 100)  # far above: the error is clipped at +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))
    ctl.update(1.8, 100)  # 10% below: shrink by 0.1 * 100 / 1000
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.01))


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="reward must be one of"):
        ppo.PPOConfig(reward="judge")
    with pytest.raises(ValueError, match="multiple of minibatch_size"):
        ppo.PPOConfig(rollout_size=20, minibatch_size=16)


@pytest.fixture(scope="module")
def sft():
    return model.load(model.SFT)


def test_layout_puts_every_response_at_the_same_column_and_logps_match(sft):
    policy, tok = sft
    gens = evaluate.sample(policy, tok, world.World(1).prompts(6, "eval"), seed=3)
    batch = ppo.layout([g.prompt_ids for g in gens], [g.response_ids for g in gens],
                       tok.pad_token_id)
    assert batch["mask"].sum(1).tolist() == [len(g.response_ids) for g in gens]
    logps, entropy = ppo.policy_logps(policy, batch)
    # Left-padded prompts with position ids give the log-probs of the unpadded sequences.
    expected = evaluate.response_logps(policy, gens, tok.pad_token_id)
    assert torch.allclose((logps * batch["mask"]).sum(1), expected, atol=1e-4)
    assert (entropy > 0).all()
    # The reward model's head read at the last response token is its usual reward.
    rm = RM.load()[0]
    expected_r = RM.rewards(rm, tok, [g.prompt for g in gens], [g.response for g in gens])
    assert torch.allclose(ppo.sequence_scores(rm, batch), expected_r, atol=1e-4)
    # A minibatch drops the columns that are padding in all its rows, and changes nothing.
    rows = [0, 2]
    mb, R = ppo.minibatch(batch, rows)
    assert R == max(len(gens[i].response_ids) for i in rows)
    assert mb["input_ids"].shape[1] <= batch["input_ids"].shape[1]
    mb_logps, _ = ppo.policy_logps(policy, mb)
    assert torch.allclose(mb_logps * mb["mask"], (logps * batch["mask"])[rows, :R], atol=1e-5)


@pytest.fixture(scope="module")
def trained_rm():
    return RM.load()[0]  # the bundled reward model


def test_gold_reward_option_puts_the_judge_score_on_the_last_token(sft, trained_rm):
    policy, tok = sft
    cfg = ppo.PPOConfig(reward="gold", no_eos_reward=None)
    ro = ppo.rollout(policy, policy, trained_rm, trained_rm, tok,
                     world.World(3).prompts(8, "eval"), cfg, kl_coef=0.1,
                     reward_stats=(0.5, 0.25), seed=0)
    gold = torch.tensor([judge.score(g.prompt, g.response, g.finished).total
                         for g in ro.generations])
    assert torch.allclose(ro.scores, (gold - 0.5) / 0.25)
    last = ro.batch["mask"].sum(1).long() - 1
    assert torch.allclose(ro.rewards[torch.arange(8), last], ro.scores)  # kl is 0 here
    assert torch.allclose(ro.learned, ppo.sequence_scores(trained_rm, ro.batch))


def _learned_reward(policy, rm, tok, prompts):
    gens = evaluate.sample(policy, tok, prompts, seed=11)
    return RM.rewards(rm, tok, [g.prompt for g in gens], [g.response for g in gens]).mean().item()


@pytest.mark.slow
def test_a_short_ppo_run_raises_the_learned_reward(sft, trained_rm):
    policy, tok = copy.deepcopy(sft[0]), sft[1]
    prompts = world.World(2).prompts(32, "eval")
    before = _learned_reward(policy, trained_rm, tok, prompts)
    cfg = ppo.PPOConfig(updates=8, rollout_size=16, minibatch_size=8, ppo_epochs=4, lr=3e-4)
    history = ppo.train_ppo(policy, tok, trained_rm, cfg)
    after = _learned_reward(policy, trained_rm, tok, prompts)
    assert len(history.train) == 8
    assert {"reward/learned", "reward/gold", "kl", "entropy", "clipfrac",
            "loss/value"} <= set(history.train[0])
    assert after > before + 0.5  # in raw reward-model units (std about 1.8 on SFT samples)
    assert history.train[-1]["kl"] > 0


def test_nan_in_the_value_model_is_named_with_update_epoch_and_minibatch(sft, trained_rm):
    policy, tok = copy.deepcopy(sft[0]), sft[1]
    value_model = copy.deepcopy(trained_rm)
    with torch.no_grad():
        value_model.score.weight[0, 0] = float("nan")
    cfg = ppo.PPOConfig(updates=1, rollout_size=8, minibatch_size=4, ppo_epochs=1,
                        normalize_reward=False)
    with pytest.raises(FloatingPointError, match=r"PPO loss is not finite .* at update 1, "
                                                 r"PPO epoch 0, minibatch rows \["):
        ppo.train_ppo(policy, tok, trained_rm, cfg, value_model=value_model)


def test_nan_reward_is_caught_before_the_update(sft, trained_rm):
    policy, tok = copy.deepcopy(sft[0]), sft[1]
    broken = copy.deepcopy(trained_rm)
    with torch.no_grad():
        broken.score.weight.fill_(float("inf"))
    cfg = ppo.PPOConfig(updates=1, rollout_size=8, minibatch_size=4, normalize_reward=False)
    with pytest.raises(FloatingPointError, match="PPO reward is not finite .* at update 1:"):
        ppo.train_ppo(policy, tok, broken, cfg)


@pytest.mark.slow
def test_rlhf_command_writes_the_before_after_table(tmp_path):
    from dpolab import cli
    out = tmp_path / "rlhf.json"
    status = cli.main(["rlhf", "--rm-pairs", "64", "--onpolicy-pairs", "32", "--updates", "1",
                       "--eval-prompts", "16", "--json", str(out)])
    result = json.loads(out.read_text())
    assert status == 0
    for stage in ("before", "after"):
        assert {"total", *world.AXES} <= set(result[stage])
        assert 0 <= result[stage]["total"] <= 1
    assert result["kl"] > 0 and result["seconds"] > 0
    assert result["reward_model"]["pairs"] == 16
