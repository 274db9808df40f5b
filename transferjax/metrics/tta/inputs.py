"""TTA settings and the eager checks of the source task, the target set and the transforms."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ... import _validation
from ..._dtypes import compute_dtype
from ..._typing import Array
from ...ot import EPS_REL, MAX_ITER, OMEGA, default_tol

__all__ = ["TTASettings"]

WIDTH_BUCKET = 256  # feature widths are zero-padded to a multiple of this (fewer compiles)
PRIOR_INITS = ("reference", "empirical")
SIMPLEX_ATOL = 1e-4  # a prior / label-map column may miss a sum of 1 by this much


def _static(default):
    return dataclasses.field(default=default, metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TTASettings:
    r"""Hyper-parameters of :func:`~transferjax.tta_optimize` and the transport solvers of TTA.

    Names follow the paper (``λ_WD``, ``λ_PM``, ``λ_IC``) and the reference code
    (``hammlab/TaskTransferAnalysis``; "ResNet18" is its ``large_scale/ResNet18`` script, the
    paper's main experiments). Integer and string fields are static (a change recompiles); float
    fields are traced. A pytree: pass it through ``jit`` as an argument.

    Attributes:
      steps: gradient steps ("epochs"). 1001: the reference's small-scale script (ResNet18
        runs 2001).
      batch_size: ``BATCH``, the largest minibatch drawn per step. 1000: ResNet18's default.
      lambda_label: ``λ_label`` (the reference's ``LAMBDA``), weight of the label distance in
        the transport cost and in the loss. 1e6: ResNet18 (the small-scale script uses 1e8).
      lambda_wd: ``λ_WD``, weight of the transport (Wasserstein) term of the objective. 2: the
        paper and every reference script.
      lambda_pm: ``λ_PM``, weight of the prior mismatch ``‖π_T − BD‖²``. 1: idem.
      lambda_ic: ``λ_IC``, weight of the invertibility penalty
        ``‖AĀ − I‖² + ‖ĀA − I‖²``. 1: idem.
      learning_rate: Adam step of ``A``, ``Ā``, ``b`` and ``B̃``. 1e-2: every reference script.
      prior_learning_rate: Adam step of ``D̃``. 1e-3: ResNet18 (the small-scale script uses 1e-4).
      adam_b1, adam_b2, adam_eps: Adam's moments and ε. 0.9, 0.999, 1e-7: the Keras defaults
        the reference runs with.
      prior_init: ``"reference"``: ``D̃₀ = π_S`` used as logits, so ``D₀ = softmax(π_S)`` (the
        reference's quirk, near uniform); ``"empirical"``: ``D₀ = π_S``.
      plan_eps_rel: ε of the per-step point-level plan, relative to the mean feature cost of the
        class pairs in play. 1e-2: ours (the reference solves the exact EMD), a plan within ~2%
        of the optimal cost.
      plan_tol: relative L1 row-marginal error at which the per-step plan stops. 1e-3: ours.
      plan_max_iter: iteration cap of the per-step plan (static). 300: ours, ~2 ε-stages of
        slack on the reference's batch of 1000.
      plan_stage_iter: iteration cap of one ε stage of the per-step plan (static). 40: ours,
        so a far-travelling plan still reaches the target ε (see :func:`transferjax.ot.sinkhorn`).
      plan_omega: over-relaxation of the per-step solvers (both levels). 1.5: ours.
      label_eps: ε of the class-level plan (label costs lie in ``[0, √2]``; a smaller ε stalls
        in float32). 1e-3: ours.
      label_tol: row-marginal tolerance of the class-level plan. 1e-4: ours.
      label_max_iter: iteration cap of the class-level plan (static). 5000: ours.
      label_pair_floor: a class pair ``(i, j)`` is used by the point-level plan when its
        class-level mass is at least this times ``min(u_i, v_j)``. 1e-4: ours.
      w1_eps_rel: ε of the bound's class-wise ``W_1``, relative to the mean cost. 1e-3: ours,
        within ~1e-4 relative of the exact EMD the reference computes.
      w1_tol: row-marginal tolerance of the bound's ``W_1`` (``None``: 1e-6 in float64, 1e-3 in
        float32, :func:`transferjax.ot.default_tol`).
      w1_max_iter: iteration cap of the bound's ``W_1`` (static). 3000: ours.
      w1_omega: over-relaxation of the bound's ``W_1``. 1.8: ours
        (:data:`transferjax.ot.OMEGA`).
    """

    steps: int = _static(1001)
    batch_size: int = _static(1000)
    lambda_label: float = 1e6
    lambda_wd: float = 2.0
    lambda_pm: float = 1.0
    lambda_ic: float = 1.0
    learning_rate: float = 1e-2
    prior_learning_rate: float = 1e-3
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-7
    prior_init: str = _static("reference")
    plan_eps_rel: float = 1e-2
    plan_tol: float = 1e-3
    plan_max_iter: int = _static(300)
    plan_stage_iter: int = _static(40)
    plan_omega: float = 1.5
    label_eps: float = 1e-3
    label_tol: float = 1e-4
    label_max_iter: int = _static(5000)
    label_pair_floor: float = 1e-4
    w1_eps_rel: float = EPS_REL
    w1_tol: float | None = None
    w1_max_iter: int = _static(MAX_ITER)
    w1_omega: float = OMEGA


_POSITIVE_INTS = ("steps", "batch_size", "plan_max_iter", "plan_stage_iter", "label_max_iter",
                  "w1_max_iter")
_NON_NEGATIVE = ("lambda_label", "lambda_wd", "lambda_pm", "lambda_ic")
_OPEN_UNIT = ("adam_b1", "adam_b2")
_OMEGAS = ("plan_omega", "w1_omega")


def resolve_settings(name: str, settings, overrides: dict, dtype) -> TTASettings:
    """``settings`` (default :class:`TTASettings`) with ``overrides`` applied and ``w1_tol``
    resolved for ``dtype``; every field checked.

    Raises:
      TypeError: ``settings`` not a :class:`TTASettings`, an unknown override, a non-int count.
      ValueError: a value out of range.
    """
    if settings is None:
        settings = TTASettings()
    elif not isinstance(settings, TTASettings):
        raise TypeError(f"{name}: settings must be a TTASettings, got {type(settings).__name__}")
    fields = {f.name for f in dataclasses.fields(TTASettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"{name}: unknown setting(s) {unknown}; TTASettings fields: "
                        f"{', '.join(sorted(fields))}")
    settings = dataclasses.replace(settings, **overrides)
    for f in _POSITIVE_INTS:
        _validation.check_positive_int(getattr(settings, f), name=name, arg=f"settings.{f}")
    if settings.prior_init not in PRIOR_INITS:
        raise ValueError(f"{name}: prior_init must be one of {PRIOR_INITS}, got "
                         f"{settings.prior_init!r}")
    for f in dataclasses.fields(TTASettings):
        v = getattr(settings, f.name)
        if f.name in _POSITIVE_INTS or f.name == "prior_init" or v is None:
            continue
        if not _validation.is_concrete(v):
            continue
        if np.ndim(v) != 0 or np.dtype(np.asarray(v).dtype).kind not in "fiu":
            raise TypeError(f"{name}: settings.{f.name} must be a real number, got {v!r}")
        v = float(v)
        if f.name in _NON_NEGATIVE:
            ok, want = np.isfinite(v) and v >= 0, "a finite number >= 0"
        elif f.name in _OPEN_UNIT:
            ok, want = 0 <= v < 1, "in [0, 1)"
        elif f.name in _OMEGAS:
            ok, want = 0 < v < 2, "in (0, 2) (over-relaxation)"
        else:
            ok, want = np.isfinite(v) and v > 0, "a finite number > 0"
        if not ok:
            raise ValueError(f"{name}: settings.{f.name} must be {want}, got {v}")
    if settings.w1_tol is None:
        settings = dataclasses.replace(settings, w1_tol=default_tol(dtype))
    return settings


class Inputs(NamedTuple):
    """The checked source task and target set in the compute dtype (NumPy arrays stay on the
    host until the kernel call: no eager device op to compile per new shape)."""

    xs: Array
    ys: Array
    xt: Array
    yt: Array
    w: Array
    c: Array
    cs: int
    ct: int
    dtype: np.dtype


def concrete(*xs) -> bool:
    return all(_validation.is_concrete(x) for x in xs)


def _xp(*xs):
    """NumPy when every array is a host (NumPy) array, else ``jax.numpy``."""
    return np if all(isinstance(x, np.ndarray) for x in xs) else jnp


def cast(x, dt):
    """``x`` as an array of dtype ``dt``: a NumPy array for host input, else a JAX array."""
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return jnp.asarray(x, dt)
    return np.asarray(x, dt)


def check_inputs(name, source_features, source_labels, target_features, target_labels, head,
                 label_map, num_target_classes, dtype, check, width=None) -> Inputs:
    """Check the source task, the target set and ``head``; the number of target classes ``c``
    comes from the target labels (or ``num_target_classes``), and from ``label_map``'s rows only
    when the labels are traced."""
    if check:
        xs = _validation.check_features(source_features, name=name, arg="source_features")
        xt = _validation.check_features(target_features, name=name, arg="target_features")
    else:
        xs, xt = (x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)
                  for x in (source_features, target_features))
    if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1]:
        raise ValueError(
            f"{name}: source_features and target_features must share the feature width (same "
            f"encoder); got {tuple(xs.shape)} and {tuple(xt.shape)}"
        )
    d = xs.shape[1]
    _validation.check_width(width, d, name=name)
    if not isinstance(head, (tuple, list)) or len(head) != 2:
        raise TypeError(
            f"{name}: head must be a tuple (W [d, z], c [z]), got {type(head).__name__}"
        )
    w, c = head
    w_shape, c_shape = np.shape(w), np.shape(c)
    if len(w_shape) != 2 or w_shape[0] != d or w_shape[1] < 2 or c_shape != (w_shape[1],):
        raise ValueError(
            f"{name}: head must be (W [d, z], c [z]) with d={d} (the feature width) and z >= 2 "
            f"source classes; got W {w_shape}, c {c_shape}"
        )
    cs = int(w_shape[1])
    ct = num_target_classes
    if ct is None and label_map is not None and np.ndim(label_map) == 2 and (
            not check or not _validation.is_concrete(target_labels)):
        ct = int(np.shape(label_map)[0])  # traced labels: the label map's rows say c
    ns, nt = xs.shape[0], xt.shape[0]
    if check:
        _validation.check_targets(source_labels, ns, name=name, arg="source_labels",
                                  num_classes=cs, allow_regression=False)
        ct = _validation.check_targets(target_labels, nt, name=name, arg="target_labels",
                                       num_classes=ct, allow_regression=False).num_classes
        for arg, lab, k in (("source_labels", source_labels, cs),
                            ("target_labels", target_labels, ct)):
            if _validation.is_concrete(lab):
                counts = np.bincount(np.asarray(lab), minlength=k)
                if (counts == 0).any():
                    empty = np.flatnonzero(counts == 0)[:10].tolist()
                    raise ValueError(
                        f"{name}: {arg}: every class 0..{k - 1} needs at least one sample; "
                        f"classes {empty} are empty"
                    )
        if concrete(w, c) and not (np.isfinite(np.asarray(w)).all()
                                   and np.isfinite(np.asarray(c)).all()):
            raise ValueError(f"{name}: head contains NaN or inf values")
    elif ct is None:
        ct = int(jnp.max(jnp.asarray(target_labels))) + 1
    if ct is None:
        raise TypeError(f"{name}: target_labels are traced; pass label_map= or num_target_classes=")
    dt = compute_dtype(xs, dtype)
    return Inputs(cast(xs, dt), cast(source_labels, np.int32), cast(xt, dt),
                  cast(target_labels, np.int32), cast(w, dt), cast(c, dt), cs, int(ct), dt)


def check_prior(name, inp: Inputs, prior, check):
    """``D [z]``: the empirical source prior ``π_S`` by default."""
    cs, dt = inp.cs, inp.dtype
    if prior is None:
        xp = _xp(inp.ys)
        return (xp.bincount(inp.ys, minlength=cs) if xp is np else
                jnp.bincount(inp.ys, length=cs)).astype(dt) / inp.ys.shape[0]
    if np.shape(prior) != (cs,):
        raise ValueError(f"{name}: prior must have shape [z]=({cs},), got {np.shape(prior)}")
    if check and concrete(prior):
        p = np.asarray(prior, np.float64)
        if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > SIMPLEX_ATOL:
            raise ValueError(f"{name}: prior must be a probability vector (>= 0, sum 1)")
    return cast(prior, dt)


def check_label_map(name, inp: Inputs, label_map, check, arg="label_map"):
    """``B [c, z]`` column-stochastic: the identity by default (needs ``c == z``)."""
    cs, ct, dt = inp.cs, inp.ct, inp.dtype
    if label_map is None:
        if ct != cs:
            raise ValueError(
                f"{name}: label_map is required when target and source class counts differ "
                f"({ct} vs {cs}); pass a [c, z] column-stochastic map or learn one with "
                f"tta_optimize"
            )
        return np.eye(ct, dtype=dt)
    if np.shape(label_map) != (ct, cs):
        raise ValueError(
            f"{name}: {arg} must have shape [c, z]=({ct}, {cs}) ({ct} target classes, {cs} "
            f"source classes), got {np.shape(label_map)}"
        )
    if check and concrete(label_map):
        bm = np.asarray(label_map, np.float64)
        sums = bm.sum(0)
        if not np.isfinite(bm).all() or (bm < 0).any() or np.abs(sums - 1).max() > SIMPLEX_ATOL:
            raise ValueError(
                f"{name}: {arg} must be column-stochastic (entries >= 0, every column "
                f"summing to 1); column sums range {sums.min():.4g}..{sums.max():.4g}"
            )
    return cast(label_map, dt)


def check_feature_map(name, inp: Inputs, feature_map, check):
    """``(A, b, Ā)``: ``(I, 0, I)`` by default; ``Ā`` defaults to the pseudo-inverse ``A⁺``
    (``A⁻¹`` when ``A`` is invertible; finite when it is singular)."""
    d, dt = inp.xs.shape[1], inp.dtype
    if feature_map is None:
        eye = np.eye(d, dtype=dt)
        return eye, np.zeros((d,), dt), eye
    if not isinstance(feature_map, (tuple, list)) or len(feature_map) not in (2, 3):
        raise TypeError(f"{name}: feature_map must be (A, b) or (A, b, A_bar)")
    shapes = [np.shape(m) for m in feature_map]
    want = [(d, d), (d,), (d, d)][: len(feature_map)]
    if shapes != want:
        raise ValueError(f"{name}: feature_map shapes must be {want}, got {shapes}")
    if check and concrete(*feature_map) and not all(
            np.isfinite(np.asarray(m)).all() for m in feature_map):
        raise ValueError(f"{name}: feature_map contains NaN or inf values")
    amat, bvec = cast(feature_map[0], dt), cast(feature_map[1], dt)
    if len(feature_map) == 3:
        abar = cast(feature_map[2], dt)
    else:
        abar = _xp(amat).linalg.pinv(amat).astype(dt)
    return amat, bvec, abar


def pad_width(xs, xt, w, amat, bvec, abar):
    """Zero-pad the feature axis to a multiple of ``WIDTH_BUCKET``: distances, logits and τ are
    unchanged when ``W`` gets zero rows and ``A``, ``Ā`` act as the identity on the new
    coordinates."""
    d = xs.shape[1]
    extra = -d % WIDTH_BUCKET
    if extra == 0:
        return xs, xt, w, amat, bvec, abar

    def pad(m, axis):
        widths = [(0, 0)] * m.ndim
        widths[axis] = (0, extra)
        return _xp(m).pad(m, widths)

    def grow(m):  # block-diagonal diag(m, I)
        xp = _xp(m)
        return xp.block([[m, xp.zeros((d, extra), m.dtype)],
                         [xp.zeros((extra, d), m.dtype), xp.eye(extra, dtype=m.dtype)]])

    return pad(xs, 1), pad(xt, 1), pad(w, 0), grow(amat), pad(bvec, 0), grow(abar)
