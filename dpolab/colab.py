"""Running the notebooks on Colab: the repository, the badge, the set-up cell.

The repository URL lives here and nowhere else; every notebook's first code cell is
``SETUP_CELL`` (a test checks it), and its badge is ``badge(notebook)``.
"""

from __future__ import annotations

REPO = "dpolab/dpolab"  # GitHub owner/name
BRANCH = "main"
REPO_URL = f"https://github.com/{REPO}"

# On Colab: clone the course (the bundled model and data come with it) and install the
# package over Colab's own stack; torch, transformers and ipywidgets already satisfy its
# ranges, so nothing of Colab's is reinstalled. Run a second time, it neither clones again
# (git would fail on the existing folder) nor adds the path twice. Elsewhere it does nothing.
SETUP_CELL = f'''# Set-up: on Colab, fetch and install the course; elsewhere this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import os

    if not os.path.isdir("/content/dpolab"):  # run again, the cell keeps the first clone
        !git clone -q --depth 1 -b {BRANCH} {REPO_URL} /content/dpolab
    %pip install -q -e /content/dpolab
    if "/content/dpolab" not in sys.path:
        sys.path.insert(0, "/content/dpolab")'''


def badge(notebook: str) -> str:
    """Markdown for the "Open in Colab" badge of ``notebooks/<notebook>``."""
    url = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
