"""How the fitted choice model is fitted: :class:`ChoiceConfig` (light: no numpy, no scikit-learn)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.errors import ConfigError, config_from_dict, unknown_choice

NegativeSampling = Literal["uniform", "popularity"]
NEGATIVE_SAMPLINGS: tuple[str, ...] = ("uniform", "popularity")


@dataclass(frozen=True)
class ChoiceConfig:
    """Settings of :func:`~recsim_personas.choice.fit.fit_choice`.

    Attributes:
        holdout_share: the last share of each history user's ratings (by time) that are the positives; the
            collaborative model, the popularity counts and the rater behind the features see only the rest.
        max_positives_per_user: at most this many positives per user (the earliest of its held-out ratings),
            so that the heaviest raters do not dominate the fit.
        negatives_per_positive: sampled non-choices per positive. The fitted probability is calibrated for
            pages where a real next movie and ``negatives_per_positive`` sampled movies are shown.
        negative_sampling: ``"uniform"`` — movies the user never rated, drawn uniformly (the exposure of the
            preference-alignment test) — or ``"popularity"`` — drawn in proportion to their ratings.
        ease_l2: L2 penalty of the item-item model (EASE) behind the collaborative features.
        recent_items: the latest history items behind the ``ease_recent`` feature.
        trend_days: the window (days before the user's latest rating) of the ``trend`` feature.
        c: inverse L2 strength of the logistic regression (scikit-learn's ``C``) on standardised features.
        validation_share: share of the history users whose choices are kept out of the logistic fit and
            score it (log-likelihood, ROC-AUC) beside the hand-set formula.
        seed: seed of the negative draws and the validation users.
    """

    holdout_share: float = 0.4
    max_positives_per_user: int = 20
    negatives_per_positive: int = 1
    negative_sampling: NegativeSampling = "uniform"
    ease_l2: float = 3000.0
    recent_items: int = 10
    trend_days: int = 30
    c: float = 1.0
    validation_share: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("holdout_share", "validation_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
                raise ConfigError(f"ChoiceConfig.{name} must be in (0, 1), got {value!r}.")
        for name in (
            "max_positives_per_user",
            "negatives_per_positive",
            "recent_items",
            "trend_days",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ChoiceConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("ease_l2", "c"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"ChoiceConfig.{name} must be a finite number > 0, got {value!r}.")
        if self.negative_sampling not in NEGATIVE_SAMPLINGS:
            raise unknown_choice("ChoiceConfig.negative_sampling", str(self.negative_sampling), NEGATIVE_SAMPLINGS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"ChoiceConfig.seed must be an integer >= 0, got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChoiceConfig:
        return config_from_dict(cls, d, "ChoiceConfig field")
