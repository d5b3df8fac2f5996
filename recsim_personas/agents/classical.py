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
    - :class:`ItemKNNRater` (``knn``): the bias model plus the similarity-weighted residuals of the user's
      most similar rated items (item-based neighbourhood with baseline, shrunk Pearson-baseline similarity).
    - :class:`BlendRater` (``blend``): a linear blend of other raters' point predictions (default: ``bias``,
      ``mf`` and ``knn``) with weights fitted by least squares on the calibration hold-out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from recsim_personas.agents.rater import N_LEVELS, RATINGS, as_requests
from recsim_personas.errors import ArtifactError, ConfigError, RecsimPersonasError, unknown_choice

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

    # -- persistence (see save_rater / load_rater) ----------------------------------------------
    def _params(self) -> dict[str, Any]:
        """Constructor settings (JSON-able), besides ``calibration_share``; :meth:`_from_params` inverts it."""
        return {}

    @classmethod
    def _from_params(cls, params: dict[str, Any], calibration_share: float) -> Self:
        """A new, unfitted rater with the settings :meth:`_params` returned."""
        return cls(calibration_share=calibration_share, **params)

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted point model: JSON-able scalars and named arrays."""

    @abstractmethod
    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`_state`."""

    def _check_fitted(self) -> None:
        if self.sigma is None:
            raise NotFittedError(f"rater {self.name!r} is not fitted; call fit(train) first.")

    def __repr__(self) -> str:
        state = f"sigma={self.sigma:.2f}" if self.sigma is not None else "unfitted"
        return f"{type(self).__name__}({state})"


def _series_arrays(prefix: str, table: pd.Series) -> dict[str, np.ndarray]:
    return {f"{prefix}_ids": table.index.to_numpy(dtype=np.int64), f"{prefix}": table.to_numpy(dtype=np.float64)}


def _series(prefix: str, arrays: dict[str, np.ndarray]) -> pd.Series:
    return pd.Series(arrays[prefix], index=pd.Index(arrays[f"{prefix}_ids"]))


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

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"mu": self.mu_}, {}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mu_ = float(meta["mu"])


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

    def _params(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"mu": self.mu_}, _series_arrays("means", self.means_)

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mu_, self.means_ = float(meta["mu"]), _series("means", arrays)


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

    def _params(self) -> dict[str, Any]:
        return {"reg_user": self.reg_user, "reg_item": self.reg_item, "n_sweeps": self.n_sweeps}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"mu": self.mu_}, {
            **_series_arrays("user_bias", self.user_bias_),
            **_series_arrays("item_bias", self.item_bias_),
        }

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mu_ = float(meta["mu"])
        self.user_bias_, self.item_bias_ = _series("user_bias", arrays), _series("item_bias", arrays)


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

    def _params(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config)}

    @classmethod
    def _from_params(cls, params: dict[str, Any], calibration_share: float) -> Self:
        return cls(MFConfig(**params["config"]), calibration_share)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"user_ids": self.user_index_.to_numpy(dtype=np.int64), "user_bias": self.bu_, "P": self.P_}
        arrays |= {"item_ids": self.item_index_.to_numpy(dtype=np.int64), "item_bias": self.bi_, "Q": self.Q_}
        return {"mu": self.mu_, "best_epochs": self._best_epochs}, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.mu_, self._best_epochs = float(meta["mu"]), meta["best_epochs"]
        self.user_index_, self.item_index_ = pd.Index(arrays["user_ids"]), pd.Index(arrays["item_ids"])
        self.bu_, self.bi_, self.P_, self.Q_ = arrays["user_bias"], arrays["item_bias"], arrays["P"], arrays["Q"]


class ItemKNNRater(PointRater):
    """Item-based neighbourhood model on the residuals of the bias model (a "kNN with baseline").

    ``mu(u, i) = b_ui + sum_j s_ij z_uj / (sum_j s_ij + damping)`` over the ``neighbors`` items ``j`` rated by
    ``u`` with the largest positive similarity to ``i``, where ``b_ui`` is :class:`BiasRater`'s prediction and
    ``z_uj = r_uj - b_uj`` its residual. The similarity is the Pearson correlation of the residuals over the
    users who rated both items, shrunk by ``n_ij / (n_ij + shrinkage)`` for ``n_ij`` such users.

    Args:
        neighbors: neighbours per prediction.
        shrinkage: pseudo-count of the similarity shrinkage.
        damping: added to the sum of similarities (pulls a prediction with weak neighbours towards ``b_ui``).
        calibration_share: see :class:`PointRater`.

    The similarity matrix is dense (``n_items**2`` float32: 11 MB for ML-100K, 55 MB for ML-1M). Unknown
    users get the bias model's prediction; so do items without positively similar rated neighbours.
    """

    name = "knn"

    def __init__(
        self, neighbors: int = 20, shrinkage: float = 50.0, damping: float = 1.0, calibration_share: float = 0.1
    ) -> None:
        super().__init__(calibration_share)
        if neighbors < 1:
            raise ConfigError(f"neighbors must be >= 1, got {neighbors!r}.")
        for field, value in (("shrinkage", shrinkage), ("damping", damping)):
            if value < 0:
                raise ConfigError(f"{field} must be >= 0, got {value!r}.")
        self.neighbors, self.shrinkage, self.damping = neighbors, shrinkage, damping

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        import scipy.sparse as sp

        base = BiasRater(calibration_share=self.calibration_share)
        base._fit_point(train, None)
        self.base_ = base
        u_codes, self.user_index_ = pd.factorize(train["user_id"])
        i_codes, self.item_index_ = pd.factorize(train["item_id"])
        z = train["rating"].to_numpy(dtype=np.float64) - base._predict_point(
            train["user_id"].to_numpy(), train["item_id"].to_numpy()
        )
        shape = (len(self.user_index_), len(self.item_index_))
        Z = sp.csr_matrix((z, (u_codes, i_codes)), shape=shape)
        ones = sp.csr_matrix((np.ones_like(z), (u_codes, i_codes)), shape=shape)
        Z2 = Z.multiply(Z).tocsr()
        cross = (Z.T @ Z).toarray()
        norms = np.sqrt((Z2.T @ ones).toarray() * (ones.T @ Z2).toarray())  # over co-raters only
        count = (ones.T @ ones).toarray()
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(norms > 0, cross / norms, 0.0) * (count / (count + self.shrinkage))
        np.fill_diagonal(sim, 0.0)
        self.sim_ = sim.astype(np.float32)
        self.residuals_ = Z  # (users x items) CSR: row u = u's rated items and residuals

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.base_._predict_point(users, items)
        up = self.user_index_.get_indexer(users)
        ip = self.item_index_.get_indexer(items)
        known = np.flatnonzero((up >= 0) & (ip >= 0))
        if known.size == 0:
            return out
        order = known[np.argsort(up[known], kind="stable")]
        bounds = np.flatnonzero(np.diff(up[order])) + 1
        Z = self.residuals_
        for group in np.split(order, bounds):
            row = Z.indptr[up[group[0]]], Z.indptr[up[group[0]] + 1]
            js, zs = Z.indices[row[0] : row[1]], Z.data[row[0] : row[1]]
            if js.size == 0:
                continue
            s = np.maximum(self.sim_[np.ix_(ip[group], js)], 0.0).astype(np.float64)
            if js.size > self.neighbors:  # keep the k largest per row
                cut = np.partition(s, js.size - self.neighbors, axis=1)[:, js.size - self.neighbors][:, None]
                s = np.where(s >= cut, s, 0.0)
            out[group] += (s @ zs) / (s.sum(axis=1) + self.damping)
        return out

    def _params(self) -> dict[str, Any]:
        return {"neighbors": self.neighbors, "shrinkage": self.shrinkage, "damping": self.damping}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        base_meta, base_arrays = self.base_._state()
        Z = self.residuals_
        arrays = {f"base/{k}": v for k, v in base_arrays.items()}
        arrays |= {
            "user_ids": self.user_index_.to_numpy(dtype=np.int64),
            "item_ids": self.item_index_.to_numpy(dtype=np.int64),
        }
        arrays |= {"sim": self.sim_, "z_indptr": Z.indptr, "z_indices": Z.indices, "z_data": Z.data}
        return {"base": base_meta}, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        import scipy.sparse as sp

        self.base_ = BiasRater(calibration_share=self.calibration_share)
        self.base_._restore(meta["base"], {k[5:]: v for k, v in arrays.items() if k.startswith("base/")})
        self.user_index_, self.item_index_ = pd.Index(arrays["user_ids"]), pd.Index(arrays["item_ids"])
        self.sim_ = arrays["sim"]
        shape = (len(self.user_index_), len(self.item_index_))
        self.residuals_ = sp.csr_matrix((arrays["z_data"], arrays["z_indices"], arrays["z_indptr"]), shape=shape)


class BlendRater(PointRater):
    """A linear blend ``w_0 + sum_m w_m mu_m(u, i)`` of other point raters.

    The members are fitted on the train ratings without the calibration hold-out, the weights by least
    squares on the hold-out (so they reward what each member predicts for later ratings, not how well it
    fits its own data), then the members are refitted on all train ratings with the weights kept.

    Args:
        members: names of :data:`CLASSICAL_RATERS` (not ``blend``), at least one.
        calibration_share: see :class:`PointRater` (also the hold-out of the weights).
    """

    name = "blend"

    def __init__(self, members: tuple[str, ...] = ("bias", "mf", "knn"), calibration_share: float = 0.1) -> None:
        super().__init__(calibration_share)
        if not members or "blend" in members:
            raise ConfigError(f"BlendRater.members must name other classical raters, got {members!r}.")
        self.members = tuple(members)
        self.members_ = [make_rater(m) for m in self.members]  # default settings of each
        for m in self.members_:
            m.calibration_share = calibration_share
        self.weights_: np.ndarray | None = None

    def _stack(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        cols = [m._predict_point(users, items) for m in self.members_]
        return np.column_stack([np.ones(len(users)), *cols])

    def _fit_point(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        for m in self.members_:
            m._fit_point(train, valid)
        if valid is not None:
            X = self._stack(valid["user_id"].to_numpy(), valid["item_id"].to_numpy())
            y = valid["rating"].to_numpy(dtype=np.float64)
            self.weights_ = np.linalg.lstsq(X, y, rcond=None)[0]
            logger.debug("blend %s: weights %s", self.members, np.round(self.weights_, 3))

    def _predict_point(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.weights_ is None:
            raise NotFittedError("the blend's weights are not fitted; call fit(train) first.")
        return self._stack(users, items) @ self.weights_

    def _params(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"members": []}
        arrays: dict[str, np.ndarray] = {"weights": np.asarray(self.weights_, dtype=np.float64)}
        for k, m in enumerate(self.members_):
            m_meta, m_arrays = m._state()
            meta["members"].append(m_meta)
            arrays |= {f"m{k}/{key}": v for key, v in m_arrays.items()}
        return meta, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights"]
        for k, (m, saved) in enumerate(zip(self.members_, meta["members"], strict=True)):
            prefix = f"m{k}/"
            m._restore(saved, {key[len(prefix) :]: v for key, v in arrays.items() if key.startswith(prefix)})


CLASSICAL_RATERS: dict[str, type[PointRater]] = {
    "global": GlobalMeanRater,
    "user": UserMeanRater,
    "item": ItemMeanRater,
    "bias": BiasRater,
    "mf": MFRater,
    "knn": ItemKNNRater,
    "blend": BlendRater,
}


def make_rater(name: str) -> PointRater:
    """A new, unfitted classical rater by name (``global``, ``user``, ``item``, ``bias``, ``mf``, ``knn``,
    ``blend``)."""
    try:
        return CLASSICAL_RATERS[name]()
    except KeyError:
        raise unknown_choice("rater", name, CLASSICAL_RATERS) from None


RATER_FILES = ("rater.json", "rater.npz")


def save_rater(rater: PointRater, out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Write a fitted classical rater into ``out_dir`` as ``rater.json`` (name, settings, spread, scalars)
    and ``rater.npz`` (its arrays; no pickle). Returns the sha256 of both files."""
    from recsim_personas._io import atomic_path, sha256_file, write_json

    rater._check_fitted()
    meta, arrays = rater._state()
    out = Path(out_dir)
    doc = {"rater": rater.name, "params": rater._params(), "calibration_share": rater.calibration_share}
    doc |= {"sigma": rater.sigma, "state": meta, "arrays": sorted(arrays)}
    with atomic_path(out / "rater.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    write_json(out / "rater.json", doc)
    return {n: sha256_file(out / n) for n in RATER_FILES}


def load_rater(path: str | os.PathLike[str]) -> PointRater:
    """Read a rater written by :func:`save_rater`; errors name the file and what is wrong with it."""
    import json

    path = Path(path)
    try:
        doc = json.loads((path / "rater.json").read_text(encoding="utf-8"))
        with np.load(path / "rater.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the classical rater in {str(path)!r}: {exc}.") from exc
    if doc.get("rater") not in CLASSICAL_RATERS:
        raise ArtifactError(f"{path / 'rater.json'}: unknown rater {doc.get('rater')!r}.")
    missing = set(doc.get("arrays", [])) - set(arrays)
    if missing:
        raise ArtifactError(f"{path / 'rater.npz'} lacks arrays {sorted(missing)}; save the rater again.")
    rater = CLASSICAL_RATERS[doc["rater"]]._from_params(doc["params"], doc["calibration_share"])
    rater._restore(doc["state"], arrays)
    rater.sigma = float(doc["sigma"])
    rater._table = _gaussian_table(rater.sigma)
    return rater
