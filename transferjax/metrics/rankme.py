"""RankMe and α-ReQ: label-free scores of the eigenspectrum of the feature covariance.

Both read one spectrum, the eigenvalues of the centred scatter ``F_cᵀF_c`` (equivalently the
squared singular values of the column-centred features), sorted in decreasing order and divided
by their sum: RankMe is the exponential of its entropy (an effective rank), α-ReQ the exponent of
a power law fitted to its tail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation
from .._dtypes import compute_dtype
from .._typing import Array, ArrayLike, DTypeLike
from ..linalg import center, gram, kernel_gram, safe_div
from ..registry import register
from ..stats import FeatureStats

__all__ = ["alpha_req", "alpha_req_exponent", "rankme", "rankme_and_alpha"]

_EPS = 1e-7  # the reference's additive smoothing of every normalised eigenvalue
_MAX_EIGVALS = 2048  # the reference keeps at most this many leading eigenvalues
_FIT_RANGE = (10, 100)  # 0-based indices of the fitted eigenvalues: ranks 11..100


def _descending(scatter: Array) -> Array:
    """Eigenvalues of a PSD matrix in decreasing order, clipped at 0 (no vectors computed)."""
    return jnp.maximum(jnp.linalg.eigvalsh(scatter)[::-1], 0.0)


def _spectrum(features: Array) -> Array:
    """The ``min(n, d)`` eigenvalues of the centred scatter, from the smaller of its two Grams."""
    x = center(features)
    n, d = x.shape
    return _descending(gram(x) if n >= d else kernel_gram(x))


def _rankme_of(lam: Array, size: Array) -> Array:
    """``exp(entropy)`` of the leading ``min(2048, size)`` entries of a descending spectrum.

    ``size`` is the reference's spectrum length ``min(n, d)`` (``d`` the true width). Entries at
    positions ``>= size`` are the exact zeros that zero padding, or a Gram larger than
    ``min(n, d)``, adds at the end of the descending spectrum; the reference's list stops before
    them. Taking the first ``size`` entries of the sorted spectrum is therefore a count of
    directions, not a mask of the padded columns (those zeros are interchangeable with genuine
    ones).
    """
    top = lam[: min(_MAX_EIGVALS, lam.shape[0])]
    keep = jnp.arange(top.shape[0]) < jnp.minimum(size, _MAX_EIGVALS)
    top = jnp.where(keep, top, 0.0)
    p = safe_div(top, jnp.sum(top)) + _EPS
    return jnp.exp(-jnp.sum(jnp.where(keep, p * jnp.log(p), 0.0)))


def _alpha_of(lam: Array, size: Array, fit_range: tuple[int, int]) -> Array:
    """Slope ``α`` of the weighted least-squares fit ``log λ_r ≈ c − α log r`` over the range.

    Ranks ``r = lo+1 .. hi`` with weights ``1/r`` (rounded to float32, as the reference does).
    Eigenvalues below ``eps·λ_1`` (rounding noise of the Gram; exact zeros of a rank-deficient
    spectrum) are raised to ``eps·λ_1`` so that the logarithm stays finite. ``NaN`` when
    ``size < hi`` (only reachable with a traced width: concrete sizes raise before this).
    """
    lo, hi = fit_range
    dtype = lam.dtype
    lam = safe_div(lam, jnp.sum(lam))
    floor = jnp.maximum(float(jnp.finfo(dtype).eps) * lam[0], float(jnp.finfo(dtype).tiny))
    y = jnp.log(jnp.maximum(lam[lo:hi], floor))
    ranks = np.arange(lo + 1, hi + 1)
    w = jnp.asarray(np.float32(1.0) / ranks.astype(np.float32), dtype)
    u = -jnp.log(jnp.asarray(ranks, dtype))
    u = u - jnp.sum(w * u) / jnp.sum(w)
    y = y - jnp.sum(w * y) / jnp.sum(w)
    alpha = jnp.sum(w * u * y) / jnp.sum(w * u * u)
    return jnp.where(size >= hi, alpha, jnp.nan)


def _terms(lam, size, *, terms, fit_range) -> dict:
    out = {}
    if "rankme" in terms:
        out["rankme"] = _rankme_of(lam, size)
    if "alpha" in terms:
        out["alpha"] = _alpha_of(lam, size, fit_range)
    return out


@jax.jit(static_argnames=("terms", "fit_range"))
def _from_features(features, width, *, terms, fit_range):
    size = jnp.minimum(features.shape[0], width)
    return _terms(_spectrum(features), size, terms=terms, fit_range=fit_range)


@jax.jit(static_argnames=("terms", "fit_range"))
def _from_stats(stats, width, *, terms, fit_range):
    size = jnp.minimum(stats.count, width)
    return _terms(_descending(stats.scatter), size, terms=terms, fit_range=fit_range)


def _check_fit_range(fit_range, *, name: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in fit_range)
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in fit_range)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= lo < hi - 1:
        raise ValueError(
            f"{name}: fit_range must be two integers (lo, hi) with 0 <= lo and hi >= lo + 2 "
            f"(0-based eigenvalue indices lo..hi-1), got {fit_range!r}"
        )
    return lo, hi


def _spectral(name, features, stats, *, width, check_inputs, dtype, terms, fit_range=_FIT_RANGE):
    """The label-free front door: validate, choose the data or statistics path, run the kernel."""
    if features is not None and stats is not None:
        raise ValueError(f"{name}: pass either features or stats=, not both")
    if features is None and stats is None:
        raise ValueError(f"{name}: features are required (or stats=)")
    if stats is not None:
        if not isinstance(stats, FeatureStats):
            raise TypeError(f"{name}: stats must be a FeatureStats, got {type(stats).__name__}")
        d = stats.num_features
        _validation.check_width(width, d, name=name)
        count = stats.count
        if _validation.is_concrete(count) and not float(np.asarray(count)) >= 2:
            raise ValueError(f"{name}: stats need at least 2 samples, got {np.asarray(count)}")
    else:
        if check_inputs:
            features = _validation.check_features(features, name=name)
        elif not isinstance(features, jax.Array):
            features = np.asarray(features)
        if np.ndim(features) != 2:
            raise ValueError(f"{name}: features must be 2-D [n, d], got shape {np.shape(features)}")
        count, d = np.shape(features)
        _validation.check_width(width, d, name=name)
    w = d if width is None else width
    if "alpha" in terms:
        _check_size(name, count, width, d, fit_range[1])
    if stats is not None:
        return _from_stats(stats, w, terms=terms, fit_range=fit_range)
    x = _validation.rescale_extreme(features, compute_dtype(features, dtype))
    return _from_features(x, w, terms=terms, fit_range=fit_range)


def _check_size(name, n, width, d: int, need: int) -> None:
    """The power-law fit reads eigenvalue ``need − 1``: the spectrum needs ``min(n, d) >= need``.

    ``d`` is the static column count; a concrete ``width`` (the true width) replaces it.
    """
    if width is not None and _validation.is_concrete(width):
        d = width
    known = {k: int(np.asarray(v)) for k, v in (("n", n), ("d", d))
             if _validation.is_concrete(v)}
    if known and min(known.values()) < need:
        got = ", ".join(f"{k}={v}" for k, v in known.items())
        raise ValueError(
            f"{name}: the power-law fit reads the covariance spectrum up to rank {need}, so it "
            f"needs min(n, d) >= {need} (n samples, d the feature width); got {got}"
        )


@register(
    "rankme",
    tasks=("classification", "regression"),
    summary="effective rank (exp entropy) of the feature covariance spectrum; label-free",
    paper="Garrido et al., ICML 2023",
    uses_labels=False,
    streams=True,
    scale_invariant=True,
)
def rankme(
    features: ArrayLike | None = None,
    *,
    width: ArrayLike | None = None,
    stats: FeatureStats | None = None,
    check_inputs: bool = True,
    dtype: DTypeLike | None = None,
) -> Array:
    r"""RankMe: the effective rank of the features, from the entropy of their covariance spectrum.

    With ``λ_1 ≥ … ≥ λ_m`` the leading ``m = min(2048, n, d)`` eigenvalues of the centred scatter
    ``F_cᵀF_c`` (the squared singular values of the column-centred features):

    .. math::
        p_i = \frac{\lambda_i}{\sum_{j \le m} \lambda_j} + 10^{-7},\qquad
        \operatorname{RankMe}(F) = \exp\Bigl(-\sum_{i=1}^{m} p_i \log p_i\Bigr)

    Between about 1 (one direction carries all the variance) and about ``m`` (a flat spectrum).
    Labels are not used. Higher is better. Invariant to the scale of the features.

    Note:
      Matches ``get_rankme`` of ``reptrix`` (BARL-SSL), which, unlike the paper's formula on the
      singular values of the raw embeddings, uses the covariance eigenvalues of the
      column-centred features: anisotropic features score much lower than with the paper's form.
      The ``10⁻⁷`` is added after normalising, so every one of the ``m`` entries counts, zero
      eigenvalues included; ``m`` uses the true ``width``. Constant features (where the reference
      divides by zero) give ``exp(m·10⁻⁷·ln 10⁷) ≈ 1``. Streams exactly from the centred scatter.

    Args:
      features: ``[n, d]`` features.
      width: true feature width when ``features`` are zero-padded (may be traced).
      stats: :class:`~transferjax.FeatureStats` in place of ``features`` (labels ignored).
      check_inputs: run the eager checks (skipped automatically for traced values).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.

    Returns:
      Scalar score (compute dtype). Higher is better.

    Raises:
      ValueError: malformed features; both or neither of ``features`` and ``stats``.
      TypeError: non-numeric features; ``stats`` not a :class:`~transferjax.FeatureStats`.

    References:
      Garrido, Balestriero, Najman, LeCun. RankMe: Assessing the Downstream Performance of
      Pretrained Self-Supervised Representations by Their Rank. ICML 2023.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> flat = np.random.default_rng(0).normal(size=(500, 16))
      >>> squashed = flat * np.logspace(0, -3, 16)
      >>> bool(tj.rankme(flat) > tj.rankme(squashed))
      True
    """
    out = _spectral("rankme", features, stats, width=width, check_inputs=check_inputs,
                    dtype=dtype, terms=("rankme",))
    return out["rankme"]


def alpha_req_exponent(
    features: ArrayLike | None = None,
    *,
    width: ArrayLike | None = None,
    stats: FeatureStats | None = None,
    fit_range: tuple[int, int] = _FIT_RANGE,
    check_inputs: bool = True,
    dtype: DTypeLike | None = None,
) -> Array:
    r"""The power-law exponent ``α`` of the covariance spectrum (α-ReQ's raw value).

    With ``λ_r`` the eigenvalues of the centred scatter ``F_cᵀF_c`` in decreasing order
    (normalised to sum 1), ``α`` is the slope of the weighted least-squares fit

    .. math::
        \min_{\alpha, c}\ \sum_{r=\mathrm{lo}+1}^{\mathrm{hi}} \frac{1}{r}
          \bigl(\log\lambda_r - c + \alpha\log r\bigr)^2

    over ranks ``11..100`` by default (``fit_range=(10, 100)``, 0-based indices ``lo..hi−1``), so
    ``λ_r ∝ r^{−α}``. Larger ``α`` means a faster-decaying spectrum. Labels are not used; the value
    is invariant to the scale of the features. Not a score with a direction: see :func:`alpha_req`.

    Note:
      Matches ``get_alpha`` of ``reptrix`` (BARL-SSL): its spectrum (``explained_variance_ratio_``
      of the column-centred features, at most 2048 values) and its weights ``1/r`` rounded to
      float32. The reference fails (``IndexError``) when the spectrum has fewer than ``hi``
      values: this raises a ``ValueError`` when ``min(n, d) < hi`` is known (a traced ``width``
      below ``hi`` gives NaN). Eigenvalues below ``eps·λ_1`` are raised to ``eps·λ_1`` (where the
      reference takes ``log 0``), so rank-deficient features give a finite, steep ``α`` and
      constant features ``α = 0``. Streams exactly from the centred scatter.

    Args:
      features: ``[n, d]`` features with ``min(n, d) >= hi``.
      width: true feature width when ``features`` are zero-padded (may be traced).
      stats: :class:`~transferjax.FeatureStats` in place of ``features``.
      fit_range: ``(lo, hi)``, 0-based eigenvalue indices ``lo..hi−1`` of the fit (static;
        default ``(10, 100)``).
      check_inputs: run the eager checks (skipped automatically for traced values).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.

    Returns:
      Scalar ``α`` (compute dtype).

    Raises:
      ValueError: ``min(n, d) < hi``; malformed features or ``fit_range``; both or neither of
        ``features`` and ``stats``.
      TypeError: non-numeric features; ``stats`` not a :class:`~transferjax.FeatureStats`.

    References:
      Agrawal, Mondal, Ghosh, Richards. α-ReQ: Assessing Representation Quality in
      Self-Supervised Learning by Measuring Eigenspectrum Decay. NeurIPS 2022.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> rng = np.random.default_rng(0)
      >>> f = rng.normal(size=(400, 200)) * np.arange(1, 201) ** -0.5  # λ_r ∝ r^-1
      >>> bool(abs(float(tj.alpha_req_exponent(f)) - 1.0) < 0.3)
      True
    """
    name = "alpha_req_exponent"
    fit_range = _check_fit_range(fit_range, name=name)
    out = _spectral(name, features, stats, width=width, check_inputs=check_inputs, dtype=dtype,
                    terms=("alpha",), fit_range=fit_range)
    return out["alpha"]


@register(
    "alpha_req",
    tasks=("classification", "regression"),
    summary="closeness of the covariance spectrum's power-law decay to alpha=1; label-free",
    paper="Agrawal et al., NeurIPS 2022",
    uses_labels=False,
    streams=True,
    scale_invariant=True,
    min_dim=lambda options: int(options.get("fit_range", _FIT_RANGE)[1]),
)
def alpha_req(
    features: ArrayLike | None = None,
    *,
    alpha0: float = 1.0,
    width: ArrayLike | None = None,
    stats: FeatureStats | None = None,
    fit_range: tuple[int, int] = _FIT_RANGE,
    check_inputs: bool = True,
    dtype: DTypeLike | None = None,
) -> Array:
    r"""α-ReQ as a score: how close the spectrum's power-law exponent is to ``α₀``.

    .. math::
        \operatorname{score}(F) = -\lvert \alpha(F) - \alpha_0 \rvert

    with ``α`` the exponent of :func:`alpha_req_exponent` (``λ_r ∝ r^{−α}`` over ranks 11..100
    of the centred covariance spectrum). Higher is better; at most 0. Labels are not used.

    Note:
      ``α`` itself has no direction: the paper finds that representations generalise best when
      their spectrum decays at a moderate rate, good models near ``α ≈ 1`` (too slow: noisy; too
      fast: collapsed), so the registered score is the negated distance to ``α₀ = 1``. The best
      ``α₀`` depends on the data and the architecture. ``α`` matches ``get_alpha`` of ``reptrix``
      (see :func:`alpha_req_exponent`), which returns the raw exponent only.

    Args:
      features: ``[n, d]`` features with ``min(n, d) >= hi`` (100 by default).
      alpha0: the target exponent ``α₀`` (default 1; may be traced).
      width: true feature width when ``features`` are zero-padded (may be traced).
      stats: :class:`~transferjax.FeatureStats` in place of ``features``.
      fit_range: ``(lo, hi)`` 0-based eigenvalue indices of the fit (static; default ``(10, 100)``).
      check_inputs: run the eager checks (skipped automatically for traced values).
      dtype: compute dtype; default float32, or float64 under ``jax_enable_x64``.

    Returns:
      Scalar score ``<= 0`` (compute dtype). Higher is better.

    Raises:
      ValueError: ``min(n, d) < hi``; malformed features or ``fit_range``; both or neither of
        ``features`` and ``stats``.
      TypeError: non-numeric features; ``stats`` not a :class:`~transferjax.FeatureStats`.

    References:
      Agrawal, Mondal, Ghosh, Richards. α-ReQ: Assessing Representation Quality in
      Self-Supervised Learning by Measuring Eigenspectrum Decay. NeurIPS 2022.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> z = np.random.default_rng(0).normal(size=(400, 200))
      >>> near = z * np.arange(1, 201) ** -0.5   # α ≈ 1
      >>> steep = z * np.arange(1, 201) ** -2.0  # α ≈ 4
      >>> bool(tj.alpha_req(near) > tj.alpha_req(steep))
      True
    """
    name = "alpha_req"
    fit_range = _check_fit_range(fit_range, name=name)
    out = _spectral(name, features, stats, width=width, check_inputs=check_inputs, dtype=dtype,
                    terms=("alpha",), fit_range=fit_range)
    alpha = out["alpha"]
    return -jnp.abs(alpha - jnp.asarray(alpha0, alpha.dtype))


def rankme_and_alpha(
    features: ArrayLike | None = None,
    *,
    width: ArrayLike | None = None,
    stats: FeatureStats | None = None,
    fit_range: tuple[int, int] = _FIT_RANGE,
    check_inputs: bool = True,
    dtype: DTypeLike | None = None,
) -> dict[str, Array]:
    r"""RankMe and the α-ReQ exponent from one eigen-decomposition.

    ``{"rankme": rankme(features), "alpha": alpha_req_exponent(features)}`` at the cost of one:
    both read the same covariance spectrum (see :func:`rankme` and :func:`alpha_req_exponent`).

    Args:
      features: ``[n, d]`` features with ``min(n, d) >= hi`` (100 by default).
      width, stats, fit_range, check_inputs, dtype: as for :func:`alpha_req_exponent`.

    Returns:
      ``{"rankme": scalar, "alpha": scalar}`` (compute dtype).

    Raises:
      ValueError, TypeError: as :func:`alpha_req_exponent`.

    Examples:
      >>> import numpy as np, transferjax as tj
      >>> f = np.random.default_rng(0).normal(size=(300, 120))
      >>> out = tj.rankme_and_alpha(f)
      >>> sorted(out), bool(out["rankme"] > 50)
      (['alpha', 'rankme'], True)
    """
    name = "rankme_and_alpha"
    fit_range = _check_fit_range(fit_range, name=name)
    return _spectral(name, features, stats, width=width, check_inputs=check_inputs, dtype=dtype,
                     terms=("rankme", "alpha"), fit_range=fit_range)
