"""Notebook 06's checks accept the worked solutions, say "not done" for the stubs and name
the typical mistakes."""

import torch

from dpolab.exercises import nb06 as ex

IGNORE = -100


def message(exercise, fn):
    v = exercise.verdict(fn)
    assert v.status == "wrong", v
    return v.message


def padded(rows, pad_id):
    width = max(len(p) + len(r) for p, r in rows)
    return torch.tensor([p + r + [pad_id] * (width - len(p) - len(r)) for p, r in rows])


def by_position(start, end):
    """Labels kept on positions ``start(p, r) <= t < end(p, r)`` of each row."""
    def labels(rows, pad_id):
        ids = padded(rows, pad_id)
        out = torch.full_like(ids, IGNORE)
        for i, (p, r) in enumerate(rows):
            a, b = start(p, r), end(p, r)
            out[i, a:b] = ids[i, a:b]
        return out
    return labels


def test_label_mask_mistakes():
    eos_masked = by_position(lambda p, r: len(p), lambda p, r: len(p) + len(r) - 1)
    first_response_masked = by_position(lambda p, r: len(p) + 1, lambda p, r: len(p) + len(r))
    last_prompt_kept = by_position(lambda p, r: len(p) - 1, lambda p, r: len(p) + len(r))
    prompt_kept = by_position(lambda p, r: 0, lambda p, r: len(p) + len(r))

    def by_pad_id(rows, pad_id):  # the trap: fine until pad == eos
        ids = padded(rows, pad_id)
        labels = ids.clone()
        labels[ids == pad_id] = IGNORE
        for i, (p, _) in enumerate(rows):
            labels[i, :len(p)] = IGNORE
        return labels

    assert ex.make_labels.verdict(by_position(lambda p, r: len(p),
                                              lambda p, r: len(p) + len(r))).correct
    assert "you masked the eos" in message(ex.make_labels, eos_masked)
    assert "comparing with pad_id" in message(ex.make_labels, by_pad_id)
    assert "first response token is masked" in message(ex.make_labels, first_response_masked)
    assert "last prompt token is scored" in message(ex.make_labels, last_prompt_kept)
    assert "prompt tokens are in your labels" in message(ex.make_labels, prompt_kept)


def test_tie_filter_mistakes():
    def by_text(rows):
        kept = [r for r in rows if r["chosen"] != r["rejected"]]
        return kept, len(rows) - len(kept)

    def uncounted(rows):
        return [r for r in rows if r["gold_chosen"] != r["gold_rejected"]], 0

    def counts_kept(rows):
        kept = [r for r in rows if r["gold_chosen"] != r["gold_rejected"]]
        return kept, len(kept)

    def keeps_ties(rows):
        kept = [r for r in rows if r["gold_chosen"] == r["gold_rejected"]]
        return kept, len(rows) - len(kept)

    def drops_noise_too(rows):
        kept = [r for r in rows if r["gold_chosen"] > r["gold_rejected"]]
        return kept, len(rows) - len(kept)

    def in_place(rows):
        dropped = sum(r["gold_chosen"] == r["gold_rejected"] for r in rows)
        rows[:] = [r for r in rows if r["gold_chosen"] != r["gold_rejected"]]
        return rows, dropped

    assert "compared the texts" in message(ex.drop_ties, by_text)
    assert "did not count" in message(ex.drop_ties, uncounted)
    assert "number of rows kept" in message(ex.drop_ties, counts_kept)
    assert "kept the ties" in message(ex.drop_ties, keeps_ties)
    assert "label noise" in message(ex.drop_ties, drops_noise_too)
    assert "changed the rows" in message(ex.drop_ties, in_place)
