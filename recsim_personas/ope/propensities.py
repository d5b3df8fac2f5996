"""Exact marginal propensities of Plackett-Luce top-k slates: P(item ∈ slate).

A PL policy with logits ``s`` over the allowed items draws its slate as the ``k`` first arrivals of an
*exponential race*: item ``j`` arrives at time ``T_j ~ Exp(w_j)`` (independent), ``w_j = softmax(s / τ)_j``, and
the order of arrival is a PL sample (the Gumbel-top-k trick in other clothes: ``T_j = exp(-(s_j + G_j))`` up to
a common factor). So item ``i`` is in the slate iff fewer than ``k`` other items arrive before it:

    P(i ∈ S) = ∫_0^∞ w_i e^{-w_i v} · P(N_{-i}(v) < k) dv,

where ``N_{-i}(v)``, the number of other items arrived by ``v``, is Poisson-binomial with success probabilities
``p_j(v) = 1 - e^{-w_j v}``. There is no closed form; :func:`pl_inclusion` evaluates the integral numerically:

- **the count**: the generating polynomial ``Π_j (1 - p_j + p_j z)`` truncated at degree ``k - 1``. Items with
  ``w_j v ≤ 1/2`` at every node (nearly all of a large catalogue) enter through its logarithm,
  ``-v Σ w_j + Σ_n (-1)^{n+1} S_n(v) z^n / n`` with ``S_n(v) = Σ_j (e^{w_j v} - 1)^n``, and ``S_n(v)`` is a power
  series in ``v`` whose coefficients are the power sums ``Σ_j w_j^l`` (the Taylor coefficients of
  ``(e^x - 1)^n``), computed once per row — so a node costs O(k · L), not O(n · k). The few items with larger
  weights are multiplied in one by one, and the items asked about are left out (leave-one-out) with prefix and
  suffix products over them, so nothing is ever divided (no unstable deconvolution);
- **the integral**: composite Gauss-Legendre in ``u = ln v`` (panels of width ≤ 0.75, 6 nodes each) over
  ``[v_min, v_max]``; below ``v_min = 1e-3`` fewer than ``k`` arrivals are certain up to ``v_min^k / k!``
  (the piece is integrated exactly), above ``v_max`` the count exceeds ``k`` except with probability ≤ 1e-15:
  ``v_max`` is the smallest ``v`` at which the ``a`` heaviest items (``a = k+1, 2(k+1), 4(k+1), ...``), each
  arriving with probability at least ``1 - e^{-w_(a) v}``, leave fewer than ``k + 1`` arrivals with binomial
  probability ≤ 1e-15 (the regularised incomplete beta, inverted with scipy).

The result is checked against brute-force enumeration of every slate (tests/ope/test_propensities.py).
"""

from __future__ import annotations

import numpy as np

from recsim_personas.errors import ConfigError

V_MIN = 1e-3
"""Below this race time the count is treated as 0 (exact up to ``V_MIN**k / k!`` for ``k ≥ 2``)."""
TAIL = 1e-15
"""Binomial tail probability that fixes the upper end of the integral."""
PANEL = 0.75
"""Largest width of a Gauss-Legendre panel in ``ln v``."""
GL_NODES = 6
"""Gauss-Legendre nodes per panel."""
ROWS_PER_CHUNK = 128
LIGHT = 0.5
"""Items with ``w_j v_max`` at most this enter through the log-series; heavier ones one by one."""


def masked_softmax(logits: np.ndarray, allowed: np.ndarray | None, temperature: float = 1.0) -> np.ndarray:
    """PL first-position probabilities ``softmax(logits / temperature)`` over the allowed items.

    Args:
        logits: float (N, n_items).
        allowed: bool (N, n_items) or ``None`` (all allowed).
        temperature: > 0.

    Returns:
        float64 (N, n_items), 0 where not allowed; rows with no allowed item are all 0.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}.")
    s = np.asarray(logits, dtype=np.float64) / temperature
    if s.ndim != 2:
        raise ConfigError(f"logits must be a 2-D array (N, n_items), got shape {s.shape}.")
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != s.shape:
            raise ConfigError(f"allowed must have the logits' shape {s.shape}, got {allowed.shape}.")
        s = np.where(allowed, s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=1, keepdims=True)
    return np.divide(e, z, out=np.zeros_like(e), where=z > 0)


def _expm1_power_coefficients(max_power: int) -> np.ndarray:
    """Taylor coefficients of ``(e^x - 1)^n``: float64 (max_power + 1, L + 1), row ``n``, column ``l`` = the
    coefficient of ``x^l``, with ``L`` large enough that the series' remainder at ``x ≤ 1`` is below 1e-18."""
    length = 40 + 4 * max_power
    while True:
        e1 = np.zeros(length + 1)
        fact = 1.0
        for ell in range(1, length + 1):
            fact *= ell
            e1[ell] = 1.0 / fact
        coef = np.zeros((max_power + 1, length + 1))
        coef[0, 0] = 1.0
        for n in range(1, max_power + 1):
            coef[n] = np.convolve(coef[n - 1], e1)[: length + 1]
        if coef[:, -8:].sum(axis=1).max() < 1e-18 or length > 4000:
            return coef
        length *= 2


def _race_end(w_sorted: np.ndarray, m: np.ndarray, k: int) -> np.ndarray:
    """``v_max`` per row (see the module docstring). ``w_sorted`` float64 (B, n) descending; ``m`` allowed counts."""
    from scipy.special import betaincinv

    b, n = w_sorted.shape
    best = np.full(b, np.inf)
    sizes = sorted({min(n, round((k + 1) * 1.25**e)) for e in range(200) if (k + 1) * 1.25 ** (e - 1) < n})
    for size in sizes:
        if size <= k:
            continue
        wa = w_sorted[:, size - 1]
        ok = (size <= m) & (wa > 0)
        if ok.any():
            # P(Bin(size, p) <= k) = I_{1-p}(size - k, k + 1): the p* where it falls to TAIL, as 1 - p* = q*
            q_star = betaincinv(size - k, k + 1, TAIL)
            v = -np.log(q_star) / np.where(ok, wa, 1.0)
            best = np.where(ok, np.minimum(best, v), best)
    return best


def _gauss_legendre(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on ``[lo, hi]`` per row: float64 (B, G) each."""
    panels = max(1, int(np.ceil(float(np.max(hi - lo)) / PANEL)))
    x, wt = np.polynomial.legendre.leggauss(GL_NODES)
    edges = np.linspace(0.0, 1.0, panels + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    half = 0.5 / panels
    unit_nodes = (centres[:, None] + half * x[None, :]).reshape(-1)  # in [0, 1]
    unit_weights = np.tile(half * wt, panels)
    width = (hi - lo)[:, None]
    return lo[:, None] + width * unit_nodes[None, :], width * unit_weights[None, :]


def _times_linear(poly: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``poly · (1 - p + p z)`` truncated to poly's degree; the coefficients on axis 0: poly (k, ...), p (...)."""
    out = poly * (1.0 - p)
    out[1:] += poly[:-1] * p
    return out


def _chunk_inclusion(w: np.ndarray, items: np.ndarray, k: int, coef: np.ndarray) -> np.ndarray:
    """:func:`pl_inclusion` for one chunk of rows whose softmax weights ``w`` (B, n) are given; ``items`` (B, r)
    valid indices. Rows need at least ``k + 1`` allowed items (the caller handles the others). Polynomials keep
    their coefficients on axis 0 (contiguous slices)."""
    b = w.shape[0]
    r = items.shape[1]
    rows = np.arange(b)[:, None]
    m = (w > 0).sum(axis=1)

    # duplicates among the items asked about count once (the later copies get the first one's answer)
    order = np.argsort(items, axis=1, kind="stable")
    srt = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    w_items = np.where(dup, 0.0, w[rows, items])  # (B, r)

    rest = w.copy()
    rest[rows, items] = 0.0  # every item asked about is left out of the rest
    v_max = np.maximum(_race_end(-np.sort(-w, axis=1), m, k), 2 * V_MIN)
    u, gw = _gauss_legendre(np.full(b, np.log(V_MIN)), np.log(v_max))
    v = np.exp(u)  # (B, G)
    g = v.shape[1]

    # split the rest: light items (w v_max <= LIGHT) through the log-series, heavy ones one by one
    x_all = rest * v_max[:, None]
    light = x_all <= LIGHT
    light_x = np.where(light, x_all, 0.0)  # x_j = w_j v_max
    x_max = float(light_x.max(initial=0.0))
    n_light = max(1, int(light.sum(axis=1).max(initial=1)))
    n_terms = _terms_needed(coef, x_max, n_light)
    power_sums = np.empty((b, n_terms))  # Σ_j x_j^l, l = 0..n_terms-1
    cols = np.flatnonzero(light_x.any(axis=0))
    xs = light_x[:, cols]
    xp = np.ones_like(xs)
    power_sums[:, 0] = light.sum(axis=1)
    for ell in range(1, n_terms):
        xp *= xs
        power_sums[:, ell] = xp.sum(axis=1)
    vt = v / v_max[:, None]  # ≤ 1
    vt_pow = np.empty((b, g, n_terms))
    vt_pow[..., 0] = 1.0
    for ell in range(1, n_terms):
        vt_pow[..., ell] = vt_pow[..., ell - 1] * vt
    # S_n(v) = Σ_l coef[n, l] (v / v_max)^l Σ_j x_j^l
    s_n = ((vt_pow * power_sums[:, None, :]) @ coef[1:k, :n_terms].T).transpose(2, 0, 1)  # (k-1, B, G)
    light_total = np.where(light, rest, 0.0).sum(axis=1)  # Σ w_j over the light items
    poly = np.zeros((k, b, g))
    poly[0] = np.exp(-v * light_total[:, None])
    for c in range(1, k):  # exp of the series: c b_c = Σ_{n=1..c} (-1)^{n+1} S_n b_{c-n}
        acc = np.zeros((b, g))
        for nn in range(1, c + 1):
            acc += (1.0 if nn % 2 else -1.0) * s_n[nn - 1] * poly[c - nn]
        poly[c] = acc / c
    heavy_w = np.where(light, 0.0, rest)
    heavy_count = int((heavy_w > 0).sum(axis=1).max(initial=0))
    if heavy_count:
        heavy = np.take_along_axis(heavy_w, np.argsort(-heavy_w, axis=1)[:, :heavy_count], axis=1)
        for j in range(heavy_count):
            poly = _times_linear(poly, -np.expm1(-heavy[:, j : j + 1] * v))

    # leave-one-out over the items asked about: prefix (with the rest folded in) and suffix products
    p_items = -np.expm1(-w_items.T[:, :, None] * v[None])  # (r, B, G)
    prefix = np.empty((r, k, b, g))
    acc_poly = poly
    for j in range(r):
        prefix[j] = acc_poly
        acc_poly = _times_linear(acc_poly, p_items[j])
    cum_suffix = np.empty((r, k, b, g))  # reversed cumulative sums of the suffix products
    acc_poly = np.zeros((k, b, g))
    acc_poly[0] = 1.0
    for j in range(r - 1, -1, -1):
        cum_suffix[j] = np.cumsum(acc_poly, axis=0)[::-1]
        acc_poly = _times_linear(acc_poly, p_items[j])
    # P(N_{-i} < k) = Σ_{a+c<k} prefix[a] suffix[c] = Σ_a prefix[a] · cumsum(suffix)[k-1-a]
    fewer = np.clip(np.einsum("rkbg,rkbg->brg", prefix, cum_suffix), 0.0, 1.0)  # (B, r, G)

    wi = w[rows, items][:, :, None]  # duplicates use their own weight here: same item, same answer
    vv = v[:, None, :]
    integrand = wi * vv * np.exp(-wi * vv) * fewer
    head = -np.expm1(-w[rows, items] * V_MIN)
    out = head + np.einsum("bg,brg->br", gw, integrand)
    # a duplicate's "fewer" counted its first copy among the others; give it the first copy's answer
    first = np.take_along_axis(order, np.maximum.accumulate(np.where(~dup_sorted, np.arange(r), 0), axis=1), axis=1)
    answer_sorted = np.take_along_axis(out, first, axis=1)
    result = np.empty_like(out)
    np.put_along_axis(result, order, answer_sorted, axis=1)
    return np.clip(result, 0.0, 1.0)


def _terms_needed(coef: np.ndarray, x_max: float, count: int) -> int:
    """How many Taylor terms keep ``count · Σ_{l ≥ L} coef[n, l] x_max^l`` below 1e-17 for every ``n``."""
    if x_max <= 0:
        return 2
    powers = x_max ** np.arange(coef.shape[1])
    tail = np.cumsum((coef * powers)[:, ::-1], axis=1)[:, ::-1].max(axis=0) * count
    small = np.flatnonzero(tail < 1e-17)
    return int(max(2, small[0] if small.size else coef.shape[1]))


def pl_inclusion(
    logits: np.ndarray,
    items: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """P(item ∈ slate) for a Plackett-Luce top-``k`` policy, exactly up to ~1e-8 (see the module docstring).

    Args:
        logits: item scores, float (N, n_items).
        items: the items to ask about, int (N, r) (any indices; repeats allowed).
        k: slate size.
        allowed: bool (N, n_items), the items the policy may draw (default: all).
        temperature: the logits are divided by it (> 0).

    Returns:
        float64 (N, r) in [0, 1]. A disallowed item has 0. A row with at most ``k`` allowed items includes each of
        them surely (1). With ``k = 1`` it is the softmax.
    """
    w_all = masked_softmax(logits, allowed, temperature)
    items = np.asarray(items, dtype=np.int64)
    n_rows, n = w_all.shape
    if items.ndim != 2 or items.shape[0] != n_rows:
        raise ConfigError(f"items must have shape ({n_rows}, r), got {items.shape}.")
    if items.size and (items.min() < 0 or items.max() >= n):
        raise ConfigError(f"items must be indices in [0, {n}), got values from {items.min()} to {items.max()}.")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ConfigError(f"k must be an integer in 1..{n}, got {k!r}.")
    rows = np.arange(n_rows)[:, None]
    w_items = w_all[rows, items]
    if k == 1:
        return w_items
    out = np.empty(items.shape, dtype=np.float64)
    m = (w_all > 0).sum(axis=1)
    few = m <= k
    out[few] = (w_items[few] > 0).astype(np.float64)
    many = np.flatnonzero(~few)
    coef = _expm1_power_coefficients(k - 1)
    for start in range(0, many.size, ROWS_PER_CHUNK):
        chunk = many[start : start + ROWS_PER_CHUNK]
        out[chunk] = _chunk_inclusion(w_all[chunk], items[chunk], k, coef)
    out[w_items <= 0] = 0.0
    return out
