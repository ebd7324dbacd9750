"""How close two training runs must be to count as the same computation.

Two implementations of one algorithm in fp32 differ by rounding: each summed log-prob over
T tokens carries a relative error of a few float32 epsilons (1.2e-7) times sqrt(T) and the
conditioning of the log-softmax, and every optimizer step carries the difference forward
(Adam rescales tiny gradient differences). Measured on two x86 CPUs, the largest relative
gap after 4 steps was 3.1e-6, about 8e-7 per step. The tolerance is therefore relative to the
magnitude of each number and grows with the step: ``RTOL_PER_STEP * (1 + step) * max(|x|, 1)``,
about 5x the measured drift. A real mistake is orders of magnitude larger: an off-by-one in
the log-probs moves every summed log-prob by nats (``test_trl_equivalence`` proves the
comparison still fails on one).

``rewards/accuracies`` counts pairs with a margin strictly above 0. Where the policy still
equals its reference (step 0), every margin is 0 up to rounding, and the count is decided by
rounding, not by the algorithm: it is compared only where margins are real.
"""

from __future__ import annotations

RTOL_PER_STEP = 5e-6
ABS_FLOOR = 1e-7


def tolerance(value: float, step: int) -> float:
    return ABS_FLOOR + RTOL_PER_STEP * (1 + step) * max(abs(value), 1.0)


def assert_runs_close(ours: list[dict], theirs: list[dict], keys: tuple[str, ...],
                      rename: dict[str, str] | None = None) -> None:
    """Each logged number of ``ours`` within ``tolerance`` of ``theirs``, step by step."""
    rename = rename or {}
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for step, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        for key in keys:
            if key == "rewards/accuracies" and abs(t["rewards/margins"]) < 1e-4 and step == 0:
                continue  # all margins are rounding-level: the strict ">" counts noise
            want = t[rename.get(key, key)]
            tol = tolerance(want, step)
            assert abs(o[key] - want) <= tol, (
                f"step {step}, {key}: {o[key]!r} vs {want!r} (tolerance {tol:.1e})")
