"""Simulated-user models: the Rater contract, classical raters and the fidelity evaluation.

Importing this package does not import torch; the torch-based raters import it when they fit.
"""

from recsim_personas.agents.classical import (
    CLASSICAL_RATERS,
    BiasRater,
    GlobalMeanRater,
    ItemMeanRater,
    MFConfig,
    MFRater,
    PointRater,
    UserMeanRater,
    make_rater,
)
from recsim_personas.agents.fidelity import FidelityReport, evaluate_fidelity
from recsim_personas.agents.rater import (
    Rater,
    check_distribution,
    expected_rating,
    most_likely_rating,
    rating_histogram,
    sample_ratings,
)

__all__ = [
    "CLASSICAL_RATERS",
    "BiasRater",
    "FidelityReport",
    "GlobalMeanRater",
    "ItemMeanRater",
    "MFConfig",
    "MFRater",
    "PointRater",
    "Rater",
    "UserMeanRater",
    "check_distribution",
    "evaluate_fidelity",
    "expected_rating",
    "make_rater",
    "most_likely_rating",
    "rating_histogram",
    "sample_ratings",
]
