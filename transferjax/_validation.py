"""Eager input checks, run by every public wrapper outside jit.

Static checks (rank, sizes, dtype kind) always run, also on tracers. Value checks (finiteness,
label range, classes present) need concrete values and are skipped for tracers: under a user's
``jit`` the caller is responsible for the values (or wraps the call in ``checkify``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Targets",
    "is_concrete",
    "check_features",
    "check_targets",
    "check_same_n",
    "check_positive_int",
    "check_real",
    "check_probs",
    "check_indices",
    "prepare_probs",
    "check_stats",
    "check_width",
    "rescale_extreme",
]


def is_concrete(x) -> bool:
    """True unless ``x`` is a tracer (abstract value inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def _as_array(x, name: str, arg: str):
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    if isinstance(x, (list, tuple, int, float, np.generic)):
        return np.asarray(x)
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name}: {arg} must be an array, got {type(x).__name__}") from err


def _all_finite(x) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.isfinite(x).all())
    return bool(jnp.isfinite(x).all())


def check_features(features, *, name: str, arg: str = "features", min_n: int = 2):
    """Check a ``[n, d]`` real feature matrix; returns it as an array (NumPy or JAX, unchanged).

    Raises:
      TypeError: not numeric real (bool, complex, object, string).
      ValueError: not 2-D, fewer than ``min_n`` rows, zero columns, NaN or inf values.
    """
    x = _as_array(features, name, arg)
    kind = "f" if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype(x.dtype).kind
    if kind not in "fiu":
        raise TypeError(f"{name}: {arg} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name}: {arg} must be 2-D [n, d], got shape {tuple(x.shape)}")
    n, d = x.shape
    if n < min_n:
        raise ValueError(f"{name}: {arg} needs at least {min_n} samples (rows), got n={n}")
    if d == 0:
        raise ValueError(f"{name}: {arg} has zero feature columns (d=0)")
    if kind == "f" and is_concrete(x) and not _all_finite(x):
        raise ValueError(f"{name}: {arg} contains NaN or inf values")
    return x


class Targets(NamedTuple):
    """Validated targets: ``values`` ([n] int labels or [n, k] float), the task, and C."""

    values: object
    regression: bool
    num_classes: int | None


def check_targets(
    labels,
    n: int,
    *,
    name: str,
    arg: str = "labels",
    num_classes: int | None = None,
    allow_regression: bool = True,
) -> Targets:
    """Check classification labels or regression targets for ``n`` samples.

    Integer dtype means classification: ``[n]`` labels in ``0..C-1`` with ``C >= 2`` classes, every
    class present (``C`` is ``max + 1``, or ``num_classes`` when given; with traced labels
    ``num_classes`` is required). Floating dtype means regression: ``[n]`` or ``[n, k]`` finite
    targets, returned as ``[n, k]``.

    Raises:
      TypeError: bool/complex labels, float targets where the metric has no regression form,
        traced integer labels without ``num_classes``.
      ValueError: wrong shape, length != n, labels outside 0..C-1, fewer than two classes, a class
        with no sample, NaN/inf targets.
    """
    y = _as_array(labels, name, arg)
    kind = np.dtype(y.dtype).kind
    if kind == "b" or kind not in "fiu":
        raise TypeError(
            f"{name}: {arg} must be integer class labels or float regression targets, "
            f"got dtype {y.dtype}"
        )
    if kind == "f":
        if not allow_regression:
            raise TypeError(
                f"{name}: {arg} must be integer class labels 0..C-1 ({name} has no regression "
                f"form), got float dtype {y.dtype}"
            )
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(
                f"{name}: regression {arg} must have shape [n] or [n, k] with n={n}, "
                f"got {tuple(y.shape)}"
            )
        if y.ndim == 2 and y.shape[1] == 0:
            raise ValueError(f"{name}: regression {arg} has zero target columns")
        if is_concrete(y) and not _all_finite(y):
            raise ValueError(f"{name}: {arg} contains NaN or inf values")
        y = y.reshape(n, -1)
        return Targets(y, True, None)

    if y.ndim != 1:
        raise ValueError(f"{name}: {arg} must be 1-D [n] class labels, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name}: {arg} has {y.shape[0]} entries but features have n={n} rows")
    if not is_concrete(y):
        if num_classes is None:
            raise TypeError(
                f"{name}: {arg} are traced (inside jit/vmap); pass num_classes= explicitly"
            )
        return Targets(y, False, int(num_classes))
    yn = np.asarray(y)
    if n == 0:
        raise ValueError(f"{name}: {arg} is empty (no samples)")
    lo, hi = int(yn.min()), int(yn.max())
    if num_classes is not None:
        check_positive_int(num_classes, name=name, arg="num_classes")
    c = hi + 1 if num_classes is None else int(num_classes)
    if lo < 0 or hi >= c:
        raise ValueError(
            f"{name}: {arg} must be integers in 0..C-1 (C={c}); got min {lo}, max {hi}"
        )
    # Count classes without allocating by label value (a label of 2**40 must not allocate).
    present_labels = np.unique(yn)
    present = int(present_labels.size)
    if present < 2:
        raise ValueError(
            f"{name}: {arg} need at least 2 classes (integers 0..C-1), got {present}"
        )
    if num_classes is None and present < c:
        missing = np.setdiff1d(np.arange(min(c, present + 10)), present_labels)[:10].tolist()
        raise ValueError(
            f"{name}: {arg} must use every class 0..C-1 (C={c}, max label {hi}) but only "
            f"{present} classes occur (e.g. {missing} have no samples): re-encode the labels "
            f"as 0..C-1"
        )
    if c > max(n, 2) and num_classes is not None and c > 2**24:
        raise ValueError(f"{name}: num_classes={c} is far beyond the {n} samples")
    return Targets(y, False, c)


def check_same_n(name: str, **arrays) -> int:
    """All arrays share their first dimension; returns it."""
    sizes = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValueError(f"{name}: inputs must have the same number of samples; {desc}")
    return next(iter(sizes.values()))


def check_positive_int(value, *, name: str, arg: str) -> int:
    """``value`` is a positive Python int (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: {arg} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: {arg} must be >= 1, got {value}")
    return int(value)


def check_real(value, *, name: str, arg: str, lo: float = -np.inf, hi: float = np.inf,
               lo_open: bool = False) -> None:
    """A real option in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``; NaN fails); skipped when
    traced (continuous options may be traced)."""
    if not is_concrete(value):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: {arg} must be a real number, got {value!r}") from None
    if not ((v > lo if lo_open else v >= lo) and v <= hi):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name}: {arg} must be in {bound}, got {value!r}")


def check_width(width, d: int, *, name: str) -> None:
    """A concrete ``width=`` is an integer in ``1..d`` (traced widths are the hub's business)."""
    if width is None or not is_concrete(width):
        return
    w = np.asarray(width)
    if w.ndim != 0 or np.dtype(w.dtype).kind not in "iu":
        raise TypeError(f"{name}: width must be an integer (the true feature width), got {width!r}")
    if not 1 <= int(w) <= d:
        raise ValueError(
            f"{name}: width must be in 1..{d} (the true width of the features' {d} columns), "
            f"got {int(w)}"
        )


def check_probs(probs, *, name: str, arg: str = "source_probs", atol: float = 1e-3):
    """Check a ``[n, z]`` matrix of class probabilities (rows on the simplex within ``atol``).

    Static checks as :func:`check_features`; on concrete values also every entry ``>= 0`` and every
    row sum within ``atol`` of 1. Returns the array unchanged.

    Raises:
      TypeError: not numeric real.
      ValueError: not 2-D, fewer than 2 rows, zero columns, NaN/inf, a negative entry, a row whose
        sum is not 1 within ``atol``.
    """
    x = check_features(probs, name=name, arg=arg)
    if is_concrete(x):
        xn = np.asarray(x, np.float64)
        if (xn < 0).any():
            r = int(np.argwhere(xn < 0)[0, 0])
            raise ValueError(
                f"{name}: {arg} must be probabilities (entries >= 0); row {r} has a negative entry"
            )
        sums = xn.sum(axis=1)
        bad = np.abs(sums - 1.0) > atol
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name}: {arg} rows must sum to 1 (within {atol:g}); row {r} sums to {sums[r]:.6g}"
            )
    return x


def prepare_probs(source_probs, labels, *, name: str, num_classes=None, check_inputs=True):
    """The front of a source-probabilities metric: ``(source_probs, labels, C)``.

    With ``check_inputs``: :func:`check_probs` and :func:`check_targets` (classification);
    without, ``C`` from ``num_classes`` or concrete labels (traced labels need ``num_classes``).
    """
    if check_inputs:
        source_probs = check_probs(source_probs, name=name, arg="source_probs")
        t = check_targets(labels, source_probs.shape[0], name=name, num_classes=num_classes,
                          allow_regression=False)
        return source_probs, t.values, t.num_classes
    if num_classes is None:
        if not is_concrete(labels):
            raise TypeError(f"{name}: labels are traced (inside jit/vmap); pass num_classes=")
        num_classes = int(jnp.max(jnp.asarray(labels))) + 1
    return source_probs, labels, int(num_classes)


def check_indices(indices, n: int, *, name: str, arg: str, num: int | None = None):
    """Check ``[n]`` integer indices in ``0..num-1`` (``num`` defaults to ``max + 1``).

    Unlike :func:`check_targets`, values need not all occur and one distinct value is allowed
    (e.g. hard source-model predictions). Returns ``(indices, num)``; with traced indices ``num``
    is required.

    Raises:
      TypeError: not integer (bool included), traced without ``num``.
      ValueError: not 1-D, length != n, a negative value or one ``>= num``.
    """
    z = _as_array(indices, name, arg)
    kind = np.dtype(z.dtype).kind
    if kind not in "iu":
        raise TypeError(f"{name}: {arg} must be integer indices, got dtype {z.dtype}")
    if z.ndim != 1:
        raise ValueError(f"{name}: {arg} must be 1-D [n], got shape {tuple(z.shape)}")
    if z.shape[0] != n:
        raise ValueError(f"{name}: {arg} has {z.shape[0]} entries but labels have n={n}")
    if not is_concrete(z):
        if num is None:
            raise TypeError(
                f"{name}: {arg} are traced (inside jit/vmap); pass their count explicitly"
            )
        return z, int(num)
    zn = np.asarray(z)
    lo, hi = int(zn.min()), int(zn.max())
    k = hi + 1 if num is None else int(num)
    if lo < 0 or hi >= k:
        raise ValueError(f"{name}: {arg} must be integers in 0..{k - 1}; got min {lo}, max {hi}")
    return z, k


def data_or_stats(features, labels, stats, *, name: str, hint: str = "stats=") -> None:
    """The front of a metric taking ``(features, labels)`` or ``stats=``: exactly one of the two.

    Raises:
      ValueError: both given, or neither (``hint`` names what may replace the data).
    """
    if stats is not None:
        if features is not None or labels is not None:
            raise ValueError(f"{name}: pass either features and labels, or stats=, not both")
    elif features is None or labels is None:
        raise ValueError(f"{name}: features and labels are required (or {hint})")


def check_stats(stats, *, name: str, features=None, labels=None, regression: bool | None = False):
    """Check a ``stats=`` argument given in place of ``(features, labels)``; returns it.

    ``regression``: ``False`` (classification statistics required), ``True`` (regression
    statistics required) or ``None`` (either). On concrete statistics also at least two classes
    with samples.

    Raises:
      ValueError: ``features``/``labels`` given as well; fewer than two classes present; no sample.
      TypeError: not a :class:`~transferjax.FeatureStats`; the wrong task.
    """
    from .stats import FeatureStats  # local: stats imports nothing from here, keep it that way

    if features is not None or labels is not None:
        raise ValueError(f"{name}: pass either features and labels, or stats=, not both")
    if not isinstance(stats, FeatureStats):
        raise TypeError(f"{name}: stats must be a FeatureStats, got {type(stats).__name__}")
    if regression is False and (stats.regression or stats.num_classes == 0):
        raise TypeError(
            f"{name}: stats must be classification statistics (integer labels with "
            f"num_classes); {name} has no regression form"
        )
    if regression is True and not stats.regression:
        raise TypeError(f"{name}: stats must be regression statistics (float targets)")
    if not stats.regression and stats.num_classes and is_concrete(stats.class_counts):
        present = int(np.sum(np.asarray(stats.class_counts) > 0))
        if present < 2:
            raise ValueError(f"{name}: stats need at least 2 classes with samples, got {present}")
    if is_concrete(stats.count) and not float(np.asarray(stats.count)) >= 2:
        raise ValueError(f"{name}: stats need at least 2 samples, got {np.asarray(stats.count)}")
    return stats


def prepare(
    features,
    labels,
    *,
    name: str,
    num_classes: int | None = None,
    check_inputs: bool = True,
    allow_regression: bool = True,
    dtype=None,
    width=None,
):
    """The common front of a features metric: checks, task, ``C``, and the compute-dtype array.

    ``width`` (the true width of zero-padded features), when concrete, must be an integer in
    ``1..d``.

    With ``check_inputs`` the features and targets are checked (:func:`check_features`,
    :func:`check_targets`); without, only the task and ``C`` are derived (``C = max + 1`` from
    concrete labels; traced labels need ``num_classes``). Returns ``(x, targets)`` with ``x`` a JAX
    array in the policy dtype and ``targets.values`` a JAX array (int32 labels, or ``[n, k]``
    float targets).
    """
    from ._dtypes import compute_dtype

    if check_inputs:
        features = check_features(features, name=name)
        targets = check_targets(
            labels,
            features.shape[0],
            name=name,
            num_classes=num_classes,
            allow_regression=allow_regression,
        )
    else:
        y = labels if isinstance(labels, jax.Array) else np.asarray(labels)
        reg = np.dtype(y.dtype).kind == "f"
        if reg and not allow_regression:
            raise TypeError(f"{name}: labels must be integer class labels, got dtype {y.dtype}")
        if not reg and num_classes is None:
            if not is_concrete(y):
                raise TypeError(f"{name}: labels are traced (inside jit/vmap); pass num_classes=")
            num_classes = int(np.max(np.asarray(y))) + 1
        targets = Targets(y.reshape(y.shape[0], -1) if reg else y, reg, num_classes)
    check_width(width, np.shape(features)[-1], name=name)
    dt = compute_dtype(features, dtype)
    values = jnp.asarray(targets.values)
    if not targets.regression:
        values = values.astype(jnp.int32)
    return rescale_extreme(features, dt), targets._replace(values=values)


# Magnitudes whose squares (and sums of squares) stay comfortably inside the dtype's range.
_SAFE_EXPONENT = {4: 40, 8: 400}


def rescale_extreme(features, dtype):
    """``features`` as a ``dtype`` JAX array, multiplied by a power of two when extreme.

    Grams and variances square the features: in float32, entries beyond ``2^±40`` (about
    ``1e±12``) overflow to inf or underflow to 0 there. When the largest magnitude of concrete
    features lies outside ``[2^-40, 2^40]`` (``2^±400`` in float64) the features are multiplied
    by ``2^-e``, ``e = round(log2 max|x|)``: exact in floating point, so scale-invariant metrics
    give exactly the unscaled score and the others score the rescaled features (documented in
    the README). Traced features are left alone.
    """
    dt = np.dtype(dtype)
    if not is_concrete(features):
        return jnp.asarray(features, dt)
    if isinstance(features, np.ndarray):
        top = float(np.max(np.abs(features))) if features.size else 0.0
    else:
        top = float(jnp.max(jnp.abs(features))) if features.size else 0.0
    limit = _SAFE_EXPONENT.get(dt.itemsize, 40)
    if top == 0.0 or -limit <= np.log2(top) <= limit:
        return jnp.asarray(features, dt)
    e = int(np.round(np.log2(top)))
    if isinstance(features, np.ndarray):  # scale before the cast (1e30 fits float32, 1e300 not)
        return jnp.asarray(np.ldexp(np.asarray(features, np.float64), -e), dt)
    return jnp.asarray(jnp.ldexp(features, -e), dt)
