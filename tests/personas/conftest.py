"""Fixtures of the persona tests: the offline persona set of the real ML-100K split, distilled once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ml100k_personas(ml100k_split, tmp_path_factory: pytest.TempPathFactory):
    """The StatsDistiller persona set of ``ml100k_split`` (read-only: tests must not change its directory)."""
    from recsim_personas.personas.distill import distill_personas
    from recsim_personas.personas.stats_distiller import StatsDistiller

    pset, _ = distill_personas(ml100k_split, tmp_path_factory.mktemp("personas") / "ml100k", StatsDistiller())
    return pset
