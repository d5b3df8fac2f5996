"""A browser view of a run: the gap report and fidelity figures, the traced users and their sessions.

:func:`~recsim_personas.view.data.collect` gathers a run directory's figures, traces and the real users behind
them; :func:`~recsim_personas.view.page.render` turns that into one self-contained HTML page; ``recsim-personas
view RUN_DIR`` does both and writes ``RUN_DIR/view.html``.
"""

from __future__ import annotations

import os
from pathlib import Path

from recsim_personas.view.data import collect
from recsim_personas.view.page import render

__all__ = ["collect", "render", "write_view"]


def write_view(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    split: str | os.PathLike[str] | None = None,
    personas: str | os.PathLike[str] | None = None,
    fidelity: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the view page of ``run`` to ``out`` (default ``run/view.html``) and return its path.

    Args:
        run: the run directory (see :mod:`recsim_personas.view.data`).
        out: the HTML file to write.
        split: the traced users' split (default: the one the traces record).
        personas: a personas directory (persona texts and clusters).
        fidelity: a fidelity suite's directory or ``fidelity.json`` (default: one found in ``run``).
    """
    from recsim_personas._io import atomic_write_text

    path = Path(out) if out is not None else Path(run) / "view.html"
    atomic_write_text(path, render(collect(run, split=split, personas=personas, fidelity=fidelity)))
    return path
