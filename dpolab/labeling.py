"""Label pairs yourself: an A/B session and its widget.

``ABSession`` shows two responses to a prompt in a random order (so the position of a
response tells nothing: annotators favour the first one they read) and turns each answer
into a row in the standard explicit format. "Tie" rows are counted, not kept: a tie says
nothing about which response to prefer. ``widget`` draws the session with ipywidgets
(APIs common to 7.7 and 8); its buttons call ``ABSession.answer``, so the session can be
driven without a browser too.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field


@dataclass
class ABSession:
    """A/B labels for ``items``: dicts with a ``prompt`` and two responses ``a`` and ``b``."""

    items: list[dict]
    seed: int = 0
    position: int = 0
    rows: list[dict] = field(default_factory=list)  # the labels, standard explicit format
    ties: int = 0

    def __post_init__(self):
        rng = random.Random(self.seed)
        self.swapped = [rng.random() < 0.5 for _ in self.items]

    @property
    def done(self) -> bool:
        return self.position >= len(self.items)

    def shown(self) -> tuple[str, str, str]:
        """(prompt, response shown as A, response shown as B) of the current item."""
        item = self.items[self.position]
        a, b = (item["b"], item["a"]) if self.swapped[self.position] else (item["a"], item["b"])
        return item["prompt"], a, b

    def answer(self, choice: str) -> None:
        """Record ``"A"``, ``"B"`` or ``"tie"`` for the current item and move on."""
        if choice not in ("A", "B", "tie"):
            raise ValueError(f"choice must be 'A', 'B' or 'tie', got {choice!r}")
        if self.done:
            raise IndexError("every pair is labelled already")
        prompt, a, b = self.shown()
        if choice == "tie":
            self.ties += 1
        else:
            chosen, rejected = (a, b) if choice == "A" else (b, a)
            self.rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        self.position += 1


def widget(session: ABSession):
    """Buttons "A is better", "B is better" and "Tie" under the current prompt."""
    import ipywidgets as w

    view = w.HTML()
    buttons = {c: w.Button(description=label) for c, label in
               (("A", "A is better"), ("B", "B is better"), ("tie", "Tie"))}

    def draw():
        if session.done:
            view.value = (f"<b>Done:</b> {len(session.rows)} labelled pairs, "
                          f"{session.ties} tie(s) left out.")
            for b in buttons.values():
                b.disabled = True
            return
        prompt, a, b = (html.escape(t) for t in session.shown())
        view.value = (f"<p><b>Pair {session.position + 1} of {len(session.items)}</b></p>"
                      f"<p><b>Prompt:</b> {prompt}</p><p><b>A:</b> {a}</p><p><b>B:</b> {b}</p>")

    def on_click(choice):
        def handler(_button):
            session.answer(choice)
            draw()
        return handler

    for choice, button in buttons.items():
        button.on_click(on_click(choice))
    draw()
    return w.VBox([view, w.HBox(list(buttons.values()))])
