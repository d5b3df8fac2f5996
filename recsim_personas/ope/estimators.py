"""Off-policy estimators of a slate policy's value from logged pages: IPS, SNIPS, DM, DR and the slate ones.

The decision is a page: context ``x_t`` (the user's state), a slate ``s_t = (a_t1..a_tk)`` drawn by the behaviour
policy ``μ``, and a reward per slot ``r_tj``; the page reward is ``R_t = Σ_j r_tj``. The value of a target policy
``π`` is ``V(π) = E_x E_{s~π(x)} [R]``, estimated over the logged contexts. Every estimator returns an
:class:`Estimate`: the value and a per-page contribution vector (float64 (n,), its mean is the value) whose
standard error gives a normal-approximation interval.

The estimators (``n`` pages, weights with ``0/0 = 0``):

- ``ips`` — slate-level importance weights ``w_t = π(s_t|x_t) / μ(s_t|x_t)``: ``V̂ = (1/n) Σ_t w_t R_t``.
  Unbiased with no assumption on the reward; its variance explodes with the slate space. (OBP's
  ``SlateStandardIPS``: the same weight on every slot of a slate, summed over slots and averaged over slates.)
- ``snips`` — self-normalised: ``V̂ = Σ_t w_t R_t / Σ_t w_t`` (contributions linearised: ``V̂ + w_t (R_t - V̂) /
  mean(w)``); undefined (NaN) when no logged slate has positive weight.
- ``iips`` — independent IPS with item marginals: ``V̂ = (1/n) Σ_t Σ_j r_tj · π(a_tj ∈ S|x_t) / μ(a_tj ∈ S|x_t)``.
  Unbiased when each item's expected reward depends on neither its slot nor the other items (true in this
  simulator, see :mod:`.truth`). OBP's ``SlateIndependentIPS`` (Li et al. 2018) uses item-*at-position*
  marginals for a position-dependent click model; with position-free rewards the item marginal is the sharper
  choice (it pools the slots).
- ``rips`` — reward-interaction IPS (McInerney et al. 2020; OBP's ``SlateRewardInteractionIPS``): slot ``j``
  is weighted by the prefix ratio ``π(a_t1..a_tj|x_t) / μ(a_t1..a_tj|x_t)``: ``V̂ = (1/n) Σ_t Σ_j w_tj r_tj``.
  Unbiased under the cascade assumption (slot ``j``'s reward depends on the items up to ``j`` only), which
  position-free independent rewards satisfy.
- ``dm`` — direct method: ``V̂ = (1/n) Σ_t E_{s~π(x_t)} Σ_{i∈s} q̂(x_t, i)`` with a reward model ``q̂``; the
  expectation is over given target slates (one for a deterministic target, Monte Carlo draws otherwise).
  Biased as far as ``q̂`` is.
- ``dr`` — doubly robust at the item level: DM plus the importance-weighted residuals of the logged items,
  ``V̂ = dm + (1/n) Σ_t Σ_j (π(a_tj ∈ S)/μ(a_tj ∈ S)) (r_tj - q̂(x_t, a_tj))``. Unbiased when the marginals are
  exact (whatever ``q̂``), with less variance than ``iips`` when ``q̂`` is good.
- ``pi`` — pseudo-inverse (Swaminathan et al. 2017): with a feature vector ``1_s`` of the slate (here the
  item-inclusion indicators, ``d = n_items``), ``Γ_μ(x) = E_μ[1_s 1_sᵀ | x]`` and ``q_π(x) = E_π[1_s | x]``,
  ``V̂ = (1/n) Σ_t R_t · q_π(x_t)ᵀ Γ_μ(x_t)⁺ 1_{s_t}``. It sees only the page reward ``R_t``. It is unbiased
  when the expected page reward is linear in ``1_s`` (additive over items — true here) and ``q_π(x)`` lies in
  the range of ``Γ_μ(x)`` (e.g. ``μ`` puts positive mass on every slate). :func:`pseudo_inverse` takes
  ``Γ`` explicitly (small catalogues); :func:`pseudo_inverse_uniform` is the closed form for a uniform
  behaviour over ``m`` allowed items: ``Γ = a I + b 11ᵀ`` with ``b = k(k-1)/(m(m-1))``, ``a = k/m - b``, whose
  inverse gives ``V̂_t = R_t · m(m-1)/(k(m-k)) · (Σ_j π(a_tj ∈ S|x_t) - k(k-1)/(m-1))``. For a non-uniform
  behaviour over a large catalogue ``Γ`` (pairwise inclusion probabilities, n_items²) is out of reach, and the
  estimator is not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recsim_personas.errors import ConfigError

ESTIMATORS = ("ips", "snips", "iips", "rips", "dm", "dr", "pi")
"""Every estimator's name, in report order."""


@dataclass(frozen=True, eq=False)
class Estimate:
    """A value estimate with its per-page contributions.

    Attributes:
        name: the estimator.
        value: the estimate (NaN when undefined, e.g. SNIPS with no positive weight).
        contributions: float64 (n,); their mean is ``value`` (for SNIPS the linearised contributions).
    """

    name: str
    value: float
    contributions: np.ndarray

    @property
    def se(self) -> float:
        """Standard error of the mean of the contributions (NaN with fewer than two pages)."""
        c = self.contributions
        if c.size < 2 or not np.isfinite(self.value):
            return math.nan
        return float(c.std(ddof=1) / math.sqrt(c.size))

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval ``value ± z · se``."""
        from scipy.stats import norm

        if not 0 < confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}.")
        half = float(norm.ppf(0.5 + confidence / 2)) * self.se
        return self.value - half, self.value + half


def _two_d(name: str, a: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = f"{shape}" if shape is not None else "(n, k)"
        raise ConfigError(f"{name} must have shape {want}, got {arr.shape}.")
    return arr


def _estimate(name: str, contributions: np.ndarray) -> Estimate:
    c = np.asarray(contributions, dtype=np.float64)
    if c.size == 0:
        raise ConfigError(f"{name}: no logged pages to estimate from.")
    return Estimate(name, float(c.mean()), c)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``0 / 0 = 0``; a positive numerator over a zero denominator is refused."""
    if ((den <= 0) & (num > 0)).any():
        raise ConfigError(
            "the target puts probability on a logged item or slate the behaviour could not have shown"
            " (behaviour propensity 0): the logs do not support the target."
        )
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def slate_weights(target_logp: np.ndarray, behaviour_logp: np.ndarray) -> np.ndarray:
    """``π(s_t|x_t) / μ(s_t|x_t)`` from per-position conditional log-probabilities (n, k) → float64 (n,)."""
    t = _two_d("target_logp", target_logp).sum(axis=1)
    b = _two_d("behaviour_logp", behaviour_logp, np.shape(target_logp)).sum(axis=1)
    if np.isneginf(b).any() and (np.isneginf(b) & np.isfinite(t)).any():
        raise ConfigError("a logged slate has behaviour probability 0 but positive target probability.")
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isneginf(t), 0.0, np.exp(t - b))


def prefix_weights(target_logp: np.ndarray, behaviour_logp: np.ndarray) -> np.ndarray:
    """``π(a_1..a_j|x) / μ(a_1..a_j|x)`` per slot, float64 (n, k)."""
    t = np.cumsum(_two_d("target_logp", target_logp), axis=1)
    b = np.cumsum(_two_d("behaviour_logp", behaviour_logp, np.shape(target_logp)), axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isneginf(t), 0.0, np.exp(t - b))


def ips(rewards: np.ndarray, target_logp: np.ndarray, behaviour_logp: np.ndarray) -> Estimate:
    """Slate-level IPS. ``rewards`` float (n, k) per slot; the log-probabilities as from
    :func:`~recsim_personas.recommenders.plackett_luce.position_log_probs` (n, k)."""
    r = _two_d("rewards", rewards)
    return _estimate("ips", slate_weights(target_logp, behaviour_logp) * r.sum(axis=1))


def snips(rewards: np.ndarray, target_logp: np.ndarray, behaviour_logp: np.ndarray) -> Estimate:
    """Self-normalised slate IPS (NaN when every weight is 0)."""
    page = _two_d("rewards", rewards).sum(axis=1)
    w = slate_weights(target_logp, behaviour_logp)
    if not w.sum() > 0:
        return Estimate("snips", math.nan, np.full(page.size, math.nan))
    value = float((w * page).sum() / w.sum())
    return Estimate("snips", value, value + w * (page - value) / w.mean())


def iips(rewards: np.ndarray, target_inclusion: np.ndarray, behaviour_inclusion: np.ndarray) -> Estimate:
    """Independent (item-marginal) IPS; inclusions float (n, k): ``P(logged item ∈ S | x)`` under each policy."""
    r = _two_d("rewards", rewards)
    t = _two_d("target_inclusion", target_inclusion, r.shape)
    b = _two_d("behaviour_inclusion", behaviour_inclusion, r.shape)
    return _estimate("iips", (_ratio(t, b) * r).sum(axis=1))


def rips(rewards: np.ndarray, target_logp: np.ndarray, behaviour_logp: np.ndarray) -> Estimate:
    """Reward-interaction (cascade) IPS with prefix weights."""
    r = _two_d("rewards", rewards)
    return _estimate("rips", (prefix_weights(target_logp, behaviour_logp) * r).sum(axis=1))


def dm(target_predictions: np.ndarray) -> Estimate:
    """Direct method from the reward model's predictions on target slates, float (n, M, k): the mean over the
    ``M`` slates of their summed predicted item rewards."""
    q = np.asarray(target_predictions, dtype=np.float64)
    if q.ndim != 3:
        raise ConfigError(f"target_predictions must have shape (n, M, k), got {q.shape}.")
    return _estimate("dm", q.sum(axis=2).mean(axis=1))


def dr(
    rewards: np.ndarray,
    logged_predictions: np.ndarray,
    target_inclusion: np.ndarray,
    behaviour_inclusion: np.ndarray,
    target_predictions: np.ndarray,
) -> Estimate:
    """Item-level doubly robust: :func:`dm` plus the item-marginal weighted residuals of the logged items.

    Args:
        rewards: per-slot rewards, float (n, k).
        logged_predictions: ``q̂(x_t, a_tj)`` of the logged items, float (n, k).
        target_inclusion, behaviour_inclusion: ``P(a_tj ∈ S | x_t)``, float (n, k).
        target_predictions: ``q̂`` on target slates, float (n, M, k).
    """
    r = _two_d("rewards", rewards)
    q = _two_d("logged_predictions", logged_predictions, r.shape)
    w = _ratio(
        _two_d("target_inclusion", target_inclusion, r.shape),
        _two_d("behaviour_inclusion", behaviour_inclusion, r.shape),
    )
    base = dm(target_predictions).contributions
    if base.shape[0] != r.shape[0]:
        raise ConfigError(f"target_predictions has {base.shape[0]} pages, rewards {r.shape[0]}.")
    return _estimate("dr", base + (w * (r - q)).sum(axis=1))


def pseudo_inverse(
    page_rewards: np.ndarray, logged_features: np.ndarray, target_marginals: np.ndarray, gamma: np.ndarray
) -> Estimate:
    """The general pseudo-inverse estimator ``(1/n) Σ_t R_t q_π(x_t)ᵀ Γ_μ(x_t)⁺ 1_{s_t}``.

    Args:
        page_rewards: ``R_t``, float (n,).
        logged_features: ``1_{s_t}``, the logged slate's indicator features, float (n, d).
        target_marginals: ``q_π(x_t) = E_π[1_s | x_t]``, float (n, d).
        gamma: ``Γ_μ(x_t) = E_μ[1_s 1_sᵀ | x_t]``, float (n, d, d) (or (d, d) shared by every page).
    """
    r = np.asarray(page_rewards, dtype=np.float64).reshape(-1)
    x = _two_d("logged_features", logged_features)
    q = _two_d("target_marginals", target_marginals, x.shape)
    g = np.asarray(gamma, dtype=np.float64)
    if g.shape not in ((x.shape[1], x.shape[1]), (x.shape[0], x.shape[1], x.shape[1])):
        raise ConfigError(f"gamma must have shape (d, d) or (n, d, d) with d = {x.shape[1]}, got {g.shape}.")
    pinv = np.linalg.pinv(g, hermitian=True)
    coef = np.einsum("nd,nde,ne->n", q, np.broadcast_to(pinv, (x.shape[0], *pinv.shape[-2:])), x)
    return _estimate("pi", r * coef)


def pseudo_inverse_uniform(rewards: np.ndarray, target_inclusion: np.ndarray, n_allowed: np.ndarray) -> Estimate:
    """The pseudo-inverse estimator for a uniformly random behaviour (closed form, item-inclusion features).

    Args:
        rewards: per-slot rewards, float (n, k) (only their page sums are used).
        target_inclusion: ``P(a_tj ∈ S | x_t)`` under the target, float (n, k).
        n_allowed: ``m_t``, the number of items the behaviour drew from, int (n,) (each ``> k``).
    """
    r = _two_d("rewards", rewards)
    t = _two_d("target_inclusion", target_inclusion, r.shape)
    m = np.asarray(n_allowed, dtype=np.float64).reshape(-1)
    k = r.shape[1]
    if m.shape[0] != r.shape[0] or (m <= k).any():
        raise ConfigError(f"n_allowed must hold one count > k = {k} per page, got {m[:5].tolist()}...")
    coef = m * (m - 1) / (k * (m - k)) * (t.sum(axis=1) - k * (k - 1) / (m - 1))
    return _estimate("pi", r.sum(axis=1) * coef)
