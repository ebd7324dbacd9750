"""The A/B labeling session and its widget, driven without a browser."""

import pytest

from dpolab import labeling, preference

ITEMS = [{"prompt": f"What is {i} plus 1?", "a": f"It is {i + 1}.", "b": f"It is {i + 2}."}
         for i in range(8)]


def test_answers_become_standard_rows_whatever_the_order_shown():
    s = labeling.ABSession(ITEMS, seed=1)
    assert any(s.swapped) and not all(s.swapped)
    while not s.done:
        _, shown_a, _ = s.shown()
        s.answer("A" if shown_a == ITEMS[s.position]["a"] else "B")  # always prefer "a"
    assert [r["chosen"] for r in s.rows] == [it["a"] for it in ITEMS]
    kept, report = preference.validate(s.rows, policy="raise")
    assert report.format == "standard explicit" and len(kept) == 8


def test_ties_are_counted_not_kept():
    s = labeling.ABSession(ITEMS[:3])
    for choice in ("tie", "B", "tie"):
        s.answer(choice)
    assert s.done and s.ties == 2 and len(s.rows) == 1
    with pytest.raises(IndexError):
        s.answer("A")
    with pytest.raises(ValueError, match="'A', 'B' or 'tie'"):
        labeling.ABSession(ITEMS).answer("left")


def test_widget_buttons_label_the_pairs():
    s = labeling.ABSession(ITEMS[:2], seed=0)
    box = labeling.widget(s)
    view, buttons = box.children
    a_button, b_button, tie_button = buttons.children
    _, a, b = s.shown()
    assert "Pair 1 of 2" in view.value and a in view.value
    a_button.click()
    tie_button.click()
    assert s.rows == [{"prompt": ITEMS[0]["prompt"], "chosen": a, "rejected": b}]
    assert "Done" in view.value and a_button.disabled
