"""Classical raters: the bar every simulated-user model must beat.

Each fits a point prediction ``mu(u, i)`` on the train ratings and turns it into a rating distribution
with a *mean-matched discretised Gaussian*: ``P(r) ∝ exp(-(r - m)^2 / (2 sigma^2))`` over ``r = 1..5``,
with the location ``m`` chosen so that the distribution's mean is exactly ``mu`` (clipped to [1, 5]).
So the expected rating equals the point prediction, and the spread ``sigma`` is fitted honestly: the last
``calibration_share`` of each user's train ratings (by time) is held out, the point model is fitted on the
rest, ``sigma`` is the value that maximises the likelihood of the held-out ratings, and then the point model
is refitted on all train ratings.

Users or items absent from the train ratings get the fallbacks of each model (the global mean, a zero
bias); this is documented per class.

Raters:
    - :class:`GlobalMeanRater` (``global``): the mean train rating.
    - :class:`UserMeanRater` (``user``): the user's mean, shrunk towards the global mean.
    - :class:`ItemMeanRater` (``item``): the item's mean, shrunk towards the global mean.
    - :class:`BiasRater` (``bias``): ``mu + b_u + b_i`` with L2-regularised biases (alternating least squares).
    - :class:`MFRater` (``mf``): biased matrix factorisation ``mu + b_u + b_i + p_u . q_i`` trained with
      torch (full-batch Adam, L2, early stopping on the calibration hold-out).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd

from recsim_personas.agents.rater import N_LEVELS, RATINGS, as_requests
from recsim_personas.errors import ConfigError, RecsimPersonasError, unknown_choice

logger = logging.getLogger(__name__)

_SIGMA_GRID = np.round(np.arange(0.30, 2.51, 0.05), 2)
_LOC_GRID = np.linspace(-30.0, 36.0, 20001)


class NotFittedError(RecsimPersonasError):
    """A rater was asked to predict before ``fit``."""


def _gaussian_table(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Means of the discretised Gaussian for every location in ``_LOC_GRID`` (increasing in location)."""
    logits = -((RATINGS[None, :] - _LOC_GRID[:, None]) ** 2) / (2 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p @ RATINGS, _LOC_GRID


def mean_matched_distribution(
    mu: np.ndarray, sigma: float, table: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Discretised Gaussians over 1..5 whose means equal ``mu``.

    Args:
        mu: target means, shape (n,), float; values outside [1, 5] are clipped.
        sigma: spread (> 0).
        table: a precomputed ``_gaussian_table(sigma)`` (speeds up repeated calls).

    Returns:
        float64 array (n, 5), rows summing to 1.
    """
    means, locs = table if table is not None else _gaussian_table(sigma)
    loc = np.interp(np.clip(np.asarray(mu, dtype=np.float64), 1.0, 5.0), means, locs)
    logits = -((RATINGS[None, :] - loc[:, None]) ** 2) / (2 * sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def temporal_holdout(train: pd.DataFrame, share: float) -> np.ndarray:
    """Boolean mask (len(train),) marking the last ``share`` of each user's ratings by time (≥ 1 kept)."""
    order = train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").index
    ranked = train.loc[order]
    pos = ranked.groupby("user_id").cumcount().to_numpy()
    n = ranked.groupby("user_id")["item_id"].transform("size").to_numpy()
    n_hold = np.where(n >= 2, np.maximum(1, np.floor(n * share)), 0).astype(int)
    mask = pd.Series(pos >= n - n_hold, index=order)
    return mask.reindex(train.index).to_numpy()


class PointRater(ABC):
    """Base class: a point model + a mean-matched Gaussian spread calibrated on a temporal hold-out.

    Args:
        calibration_share: share of each user's train ratings (the latest) held out to fit ``sigma``.
    """

    name: str = "point"

    def __init__(self, calibration_share: float = 0.1) -> None:
        if not 0.0 < calibration_share < 0.5:
            raise ConfigError(f"calibration_share must be in (0, 0.5), got {calibration_share!r}.")
        self.calibration_share = calibration_share
        self.sigma: float | None = None
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    # -- the point model ------------------------------------------------------------------------
    @abstractmethod
    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        """Fit the point model on ``train``; ``valid`` (held-out ratings) may be used for early stopping."""

    @abstractmethod
    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Point predictions, float64 (n,)."""

    # -- public API -----------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame) -> Self:
        """Fit on a ratings frame with ``user_id``, ``item_id``, ``rating``, ``timestamp``."""
        missing = {"user_id", "item_id", "rating", "timestamp"} - set(train.columns)
        if missing:
            raise ConfigError(f"{self.name}: the train frame lacks columns {sorted(missing)}.")
        if train.empty:
            raise ConfigError(f"{self.name}: cannot fit on an empty train frame.")
        hold = temporal_holdout(train, self.calibration_share)
        fit_part, held = train[~hold], train[hold]
        self._fit_point(fit_part, held)
        mu = self._predict_point(*as_requests(held["user_id"].to_numpy(), held["item_id"].to_numpy()))
        idx = held["rating"].to_numpy(dtype=np.int64) - 1
        best = (np.inf, 1.0)
        for sigma in _SIGMA_GRID:
            table = _gaussian_table(float(sigma))
            p = mean_matched_distribution(mu, float(sigma), table)[np.arange(len(idx)), idx]
            nll = -np.mean(np.log(np.maximum(p, 1e-12)))
            best = min(best, (nll, float(sigma)))
        self.sigma = best[1]
        self._table = _gaussian_table(self.sigma)
        logger.debug("%s: sigma=%.2f (hold-out NLL %.4f on %d ratings)", self.name, self.sigma, best[0], len(idx))
        self._fit_point(train, None)
        return self

    def predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Point predictions (the distributions' means), float64 (n,), clipped to [1, 5]."""
        self._check_fitted()
        return np.clip(self._predict_point(*as_requests(users, items)), 1.0, 5.0)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating distributions, float64 (n, 5); see the module docstring."""
        self._check_fitted()
        u, i = as_requests(users, items)
        if u.size == 0:
            return np.zeros((0, N_LEVELS))
        return mean_matched_distribution(self._predict_point(u, i), self.sigma, self._table)

    def _check_fitted(self) -> None:
        if self.sigma is None:
            raise NotFittedError(f"rater {self.name!r} is not fitted; call fit(train) first.")

    def __repr__(self) -> str:
        state = f"sigma={self.sigma:.2f}" if self.sigma is not None else "unfitted"
        return f"{type(self).__name__}({state})"


def _lookup(table: pd.Series, keys: np.ndarray, default: float) -> np.ndarray:
    """Vectorised dict lookup: ``table[key]`` for each key, ``default`` where absent."""
    pos = table.index.get_indexer(keys)
    out = np.full(len(keys), default, dtype=np.float64)
    hit = pos >= 0
    out[hit] = table.to_numpy(dtype=np.float64)[pos[hit]]
    return out


class GlobalMeanRater(PointRater):
    """Everyone rates everything at the global train mean."""

    name = "global"

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        self.mu_ = float(train["rating"].mean())

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.mu_)


class _ShrunkMeanRater(PointRater):
    key: str = ""

    def __init__(self, shrinkage: float = 5.0, calibration_share: float = 0.1) -> None:
        super().__init__(calibration_share)
        if shrinkage < 0:
            raise ConfigError(f"shrinkage must be >= 0, got {shrinkage!r}.")
        self.shrinkage = shrinkage

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        self.mu_ = float(train["rating"].mean())
        g = train.groupby(self.key)["rating"].agg(["sum", "size"])
        self.means_ = (g["sum"] + self.shrinkage * self.mu_) / (g["size"] + self.shrinkage)

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return _lookup(self.means_, users if self.key == "user_id" else items, self.mu_)


class UserMeanRater(_ShrunkMeanRater):
    """The user's mean train rating, shrunk towards the global mean by ``shrinkage`` pseudo-ratings.

    Unknown users get the global mean.
    """

    name = "user"
    key = "user_id"


class ItemMeanRater(_ShrunkMeanRater):
    """The item's mean train rating, shrunk towards the global mean by ``shrinkage`` pseudo-ratings.

    Items without train ratings get the global mean.
    """

    name = "item"
    key = "item_id"


class BiasRater(PointRater):
    """``mu + b_u + b_i`` with L2-regularised biases, fitted by alternating least squares.

    Args:
        reg_user: L2 weight on user biases (pseudo-ratings at zero bias).
        reg_item: L2 weight on item biases.
        n_sweeps: ALS sweeps (items then users each sweep).

    Unknown users or items get a zero bias.
    """

    name = "bias"

    def __init__(
        self,
        reg_user: float = 5.0,
        reg_item: float = 10.0,
        n_sweeps: int = 10,
        calibration_share: float = 0.1,
    ) -> None:
        super().__init__(calibration_share)
        for field, value in (("reg_user", reg_user), ("reg_item", reg_item)):
            if value < 0:
                raise ConfigError(f"{field} must be >= 0, got {value!r}.")
        if n_sweeps < 1:
            raise ConfigError(f"n_sweeps must be >= 1, got {n_sweeps!r}.")
        self.reg_user, self.reg_item, self.n_sweeps = reg_user, reg_item, n_sweeps

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        r = train["rating"].to_numpy(dtype=np.float64)
        self.mu_ = float(r.mean())
        u_codes, u_index = pd.factorize(train["user_id"])
        i_codes, i_index = pd.factorize(train["item_id"])
        bu = np.zeros(len(u_index))
        bi = np.zeros(len(i_index))
        n_u = np.bincount(u_codes, minlength=len(u_index))
        n_i = np.bincount(i_codes, minlength=len(i_index))
        for _ in range(self.n_sweeps):
            bi = np.bincount(i_codes, r - self.mu_ - bu[u_codes], len(i_index)) / (n_i + self.reg_item)
            bu = np.bincount(u_codes, r - self.mu_ - bi[i_codes], len(u_index)) / (n_u + self.reg_user)
        self.user_bias_ = pd.Series(bu, index=u_index)
        self.item_bias_ = pd.Series(bi, index=i_index)

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu_ + _lookup(self.user_bias_, users, 0.0) + _lookup(self.item_bias_, items, 0.0)


@dataclass(frozen=True)
class MFConfig:
    """Hyper-parameters of :class:`MFRater`.

    Attributes:
        dim: latent factor dimension.
        reg: L2 weight on factors and biases (per rating, mean-normalised loss).
        lr: Adam learning rate.
        max_epochs: full-batch steps at most.
        patience: stop after this many steps without improvement on the calibration hold-out.
        seed: seed of the factor initialisation (a private torch.Generator; no global seeding).
    """

    dim: int = 32
    reg: float = 0.15
    lr: float = 0.05
    max_epochs: int = 300
    patience: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("dim", "max_epochs", "patience"):
            if int(getattr(self, field)) < 1:
                raise ConfigError(f"MFConfig.{field} must be >= 1, got {getattr(self, field)!r}.")
        for field in ("reg", "lr"):
            if float(getattr(self, field)) <= 0 and not (field == "reg" and self.reg == 0):
                raise ConfigError(f"MFConfig.{field} must be > 0, got {getattr(self, field)!r}.")


class MFRater(PointRater):
    """Biased matrix factorisation ``mu + b_u + b_i + p_u . q_i`` (torch, CPU).

    Trained full-batch with Adam on the mean squared error plus ``reg`` times the squared norms of the
    parameters touched by each rating. The number of steps is chosen by early stopping on the temporal
    calibration hold-out, then the model is refitted on all train ratings for that many steps.
    Unknown users or items get zero bias and zero factors.
    """

    name = "mf"

    def __init__(self, config: MFConfig | None = None, calibration_share: float = 0.1) -> None:
        super().__init__(calibration_share)
        self.config = config or MFConfig()
        self._best_epochs: int | None = None

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        import torch

        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        u_codes, u_index = pd.factorize(train["user_id"])
        i_codes, i_index = pd.factorize(train["item_id"])
        u = torch.as_tensor(u_codes, dtype=torch.long)
        i = torch.as_tensor(i_codes, dtype=torch.long)
        r = torch.as_tensor(train["rating"].to_numpy(dtype=np.float32))
        mu = float(r.mean())
        P = (0.01 * torch.randn(len(u_index), cfg.dim, generator=gen)).requires_grad_()
        Q = (0.01 * torch.randn(len(i_index), cfg.dim, generator=gen)).requires_grad_()
        bu = torch.zeros(len(u_index), requires_grad=True)
        bi = torch.zeros(len(i_index), requires_grad=True)
        params = [P, Q, bu, bi]
        opt = torch.optim.Adam(params, lr=cfg.lr)

        def forward(uu: torch.Tensor, ii: torch.Tensor) -> torch.Tensor:
            return mu + bu[uu] + bi[ii] + (P[uu] * Q[ii]).sum(-1)

        if valid is not None:
            vu = torch.as_tensor(u_index.get_indexer(valid["user_id"]), dtype=torch.long)
            vi = torch.as_tensor(i_index.get_indexer(valid["item_id"]), dtype=torch.long)
            vr = torch.as_tensor(valid["rating"].to_numpy(dtype=np.float32))
            known = (vu >= 0) & (vi >= 0)
        epochs = cfg.max_epochs if valid is not None else (self._best_epochs or cfg.max_epochs)
        best_loss, best_epoch, since = np.inf, 0, 0
        for epoch in range(1, epochs + 1):
            opt.zero_grad()
            pred = forward(u, i)
            loss = ((pred - r) ** 2).mean() + cfg.reg * (
                (P[u] ** 2).sum(-1) + (Q[i] ** 2).sum(-1) + bu[u] ** 2 + bi[i] ** 2
            ).mean()
            loss.backward()
            opt.step()
            if valid is not None:
                with torch.no_grad():
                    vp = torch.full_like(vr, mu)
                    if known.any():
                        vp[known] = forward(vu[known], vi[known])
                    # unknown ids: partial biases
                    vloss = float(((vp.clamp(1, 5) - vr) ** 2).mean())
                if vloss < best_loss - 1e-5:
                    best_loss, best_epoch, since = vloss, epoch, 0
                else:
                    since += 1
                    if since >= cfg.patience:
                        break
        if valid is not None:
            self._best_epochs = max(best_epoch, 1)
            logger.debug("mf: early stopping picked %d steps (hold-out MSE %.4f)", self._best_epochs, best_loss)
        self.mu_ = mu
        self.user_index_, self.item_index_ = u_index, i_index
        self.P_, self.Q_ = P.detach().numpy().astype(np.float64), Q.detach().numpy().astype(np.float64)
        self.bu_, self.bi_ = bu.detach().numpy().astype(np.float64), bi.detach().numpy().astype(np.float64)

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        up = self.user_index_.get_indexer(users)
        ip = self.item_index_.get_indexer(items)
        ku, ki = up >= 0, ip >= 0
        out = np.full(len(users), self.mu_)
        out[ku] += self.bu_[up[ku]]
        out[ki] += self.bi_[ip[ki]]
        both = ku & ki
        out[both] += np.einsum("nd,nd->n", self.P_[up[both]], self.Q_[ip[both]])
        return out


CLASSICAL_RATERS: dict[str, Callable[[], PointRater]] = {
    "global": GlobalMeanRater,
    "user": UserMeanRater,
    "item": ItemMeanRater,
    "bias": BiasRater,
    "mf": MFRater,
}


def make_rater(name: str) -> PointRater:
    """A new, unfitted classical rater by name (``global``, ``user``, ``item``, ``bias``, ``mf``)."""
    try:
        return CLASSICAL_RATERS[name]()
    except KeyError:
        raise unknown_choice("rater", name, CLASSICAL_RATERS) from None
