import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transferjax as tj
from tests import _golden
from tests._tol import PAD_RTOL, rtol
from transferjax import ot
from transferjax.metrics.tta import optimize as tta_optimize_module
from transferjax.metrics.tta.optimize import _label_dominated_plan

# the solvers are pure functions called inside a metric's jit; jitted here too (eager while
# loops dispatch op by op)
transport_cost = jax.jit(ot.transport_cost)
group_transport_costs = jax.jit(ot.group_transport_costs, static_argnames="num_groups")
class_wasserstein1 = jax.jit(ot.class_wasserstein1, static_argnames=("num_classes", "block"))
round_to_marginals = jax.jit(ot.round_to_marginals)
sinkhorn = jax.jit(ot.sinkhorn, static_argnames=("max_iter", "stage_iter"))

# Parity at fixed transforms to rtol 1e-4 under x64 (the reference's W1 is an exact LP; ours is
# ε-scaled Sinkhorn + rounding); float32 keeps 1e-3.
TTA_RTOL = {"float32": 1e-3, "float64": 1e-4}

TERMS = [
    ("weighted_src_loss", "weighted_source_loss"),
    ("cond_entropy", "conditional_entropy"),
    ("prior_mismatch", "prior_mismatch"),
    ("wd", "wasserstein"),
    ("target_loss_transformed_head", "target_loss"),
]


def derive_task(x, y):
    """The golden runner's deterministic source/target split, scaling, ridge head and B."""
    x = np.asarray(x, np.float64)
    n = len(y)
    c = int(y.max()) + 1
    ct = max(2, c // 2)
    perm = np.random.default_rng(0).permutation(n)
    src, tgt = perm[: n // 2], perm[n // 2 :]

    def scale(a):
        sd = a.std(0)
        sd = np.where(sd < 10 * np.finfo(np.float64).eps, 1.0, sd)
        return ((a - a.mean(0)) / sd).astype(np.float32)

    xs, xt = scale(x[src]), scale(x[tgt])
    ys, yt = y[src], y[tgt] % ct
    onehot = np.eye(c)[ys]
    x64 = xs.astype(np.float64)
    w = np.linalg.solve(x64.T @ x64 + np.eye(x.shape[1]), x64.T @ (onehot - onehot.mean(0)))
    logits = 4.0 * (np.arange(c)[None, :] % ct == np.arange(ct)[:, None])
    bmat = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    head = (w.astype(np.float32), onehot.mean(0).astype(np.float32))
    return xs, ys, xt, yt, head, bmat.astype(np.float32)


def _task(ns=60, nt=50, d=5, cs=3, seed=0):
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.normal(size=(cs, d))
    ys = np.r_[np.arange(cs), rng.integers(0, cs, ns - cs)]
    yt = np.r_[np.arange(cs), rng.integers(0, cs, nt - cs)]
    xs = (means[ys] + rng.normal(size=(ns, d))).astype(np.float32)
    xt = (means[yt] + rng.normal(size=(nt, d)) + 0.3).astype(np.float32)
    head = ((means.T / 4).astype(np.float32), np.zeros(cs, np.float32))
    return xs, ys, xt, yt, head


def _tta_cases():
    """Every Tier-A case (``tta.json`` nests a dict of terms per case, so ``_golden.cases``'s
    hub detection does not apply): ``(case, model, terms)``."""
    if not _golden.available():
        return [pytest.param(None, marks=pytest.mark.skip(reason=_golden.MISSING))]
    out = []
    for case, value in _golden.load_json("tta.json")["cases"].items():
        if value is None:
            continue
        if "wd" in value:
            out.append(pytest.param((case, None, value), id=case))
        else:
            for model, terms in value.items():
                out.append(pytest.param((case, model, terms), id=f"{case}-{model}"))
    return out


@pytest.mark.parametrize("case", _tta_cases())
def test_golden_fixed_transforms(case, precision):
    name, model, expected = case
    x, y, _ = _golden.load_input(name, model)
    xs, ys, xt, yt, head, bmat = derive_task(x, y)
    out = tj.tta_bound(xs, ys, xt, yt, head, label_map=bmat)
    assert out.bound.dtype == (jnp.float64 if precision == "float64" else jnp.float32)
    for key, field in TERMS:
        np.testing.assert_allclose(
            float(getattr(out, field)), expected[key], rtol=TTA_RTOL[precision], err_msg=key
        )
    # deterministic τ maximises over every label: at least the reference's random-label value
    assert float(out.tau) >= expected["tau"] * (1 - 1e-5)
    tau1 = out.weighted_source_loss + out.conditional_entropy + out.wasserstein
    np.testing.assert_allclose(float(tau1), expected["bound_tau1"], rtol=TTA_RTOL[precision])


def _exact_ot(cost, a, b):
    from scipy.optimize import linprog

    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    cols = np.kron(np.ones((1, n)), np.eye(m))
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[a, b], bounds=(0, None))
    return res.fun


@pytest.mark.parametrize("seed", range(4))
def test_transport_matches_linprog(seed, precision):
    rng = np.random.default_rng(seed)
    n, m = 20, 27  # one shape: one compile per precision
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) + 0.5
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    exact = _exact_ot(cost, a, b)
    got = float(transport_cost(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b)))
    assert got >= exact * (1 - 1e-6)  # rounded plan is feasible: never below the optimum
    np.testing.assert_allclose(got, exact, rtol=TTA_RTOL[precision])


@pytest.mark.parametrize("stage_iter", [None, 5])
def test_step_solver_matches_linprog(stage_iter):
    """The per-step solver of tta_optimize (kernel-form Sinkhorn + rounding) against the LP."""
    rng = np.random.default_rng(11)
    n, m = 20, 27
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) + 0.5
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    exact = _exact_ot(cost, a, b)
    c, aa, bb = (jnp.asarray(v, jnp.float32) for v in (cost, a, b))
    p, it = sinkhorn(c, aa, bb, eps=1e-3 * c.mean(), tol=1e-4, omega=1.5, max_iter=3000,
                     stage_iter=stage_iter)
    p = round_to_marginals(p, aa, bb)
    np.testing.assert_allclose(p.sum(1), a, rtol=1e-4)
    np.testing.assert_allclose(p.sum(0), b, rtol=1e-4)
    got = float(jnp.sum(p * c))
    assert got >= exact * (1 - 1e-5) and int(it) < 3000
    np.testing.assert_allclose(got, exact, rtol=2e-3)


def _lexicographic_case():
    rng = np.random.default_rng(3)
    cs, ct, n, m = 4, 3, 24, 21
    ys, yt = np.arange(n) % cs, np.arange(m) % ct
    xs = rng.normal(size=(n, 3)) + ys[:, None]
    xt = rng.normal(size=(m, 3)) + yt[:, None]
    feat = np.linalg.norm(xs[:, None] - xt[None], axis=-1)
    bmat = np.exp(rng.uniform(size=(ct, cs)) * 3)
    bmat /= bmat.sum(0)
    lab = np.sqrt(np.maximum((bmat**2).sum(0)[:, None] - 2 * bmat.T + 1, 0))
    return cs, ct, ys, yt, feat, lab, np.full(n, 1 / n), np.full(m, 1 / m)


def test_step_plan_is_the_lexicographic_optimum():
    """λ_label = 1e6 makes the reference's EMD lexicographic: class-pair masses optimal for the
    label cost, then the feature cost inside them. The per-step plan reproduces both levels."""
    from scipy.optimize import linprog

    cs, ct, ys, yt, feat, lab, a, b = _lexicographic_case()
    n, m = len(ys), len(yt)
    rows = np.kron(np.eye(n), np.ones((1, m)))
    cols = np.kron(np.ones((1, n)), np.eye(m))
    res = linprog((feat + 1e6 * lab[ys][:, yt]).ravel(), A_eq=np.vstack([rows, cols]),
                  b_eq=np.r_[a, b], bounds=(0, None))
    exact = res.x.reshape(n, m)
    plan, iters = jax.jit(_label_dominated_plan, static_argnames=("cs", "ct"))(
        jnp.asarray(feat, jnp.float32), jnp.asarray(lab, jnp.float32), jnp.asarray(ys),
        jnp.asarray(yt), jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
        tj.TTASettings(), cs=cs, ct=ct,
    )
    plan = np.asarray(plan, np.float64)
    pairs = lambda p: np.eye(cs)[ys].T @ p @ np.eye(ct)[yt]  # noqa: E731
    np.testing.assert_allclose(pairs(plan), pairs(exact), atol=2e-3)
    np.testing.assert_allclose(plan.sum(1), a, rtol=1e-4)
    got, best = (plan * feat).sum(), (exact * feat).sum()
    assert best * (1 - 1e-3) <= got <= best * 1.02  # entropic (ε = 1% of the mean cost) plan
    assert iters.shape == (2,) and int(iters[1]) < 300


def test_transport_groups_are_independent():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(24, 2))
    gx, gy = np.arange(30) % 2, np.arange(24) % 2
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
    a = 0.5 / np.bincount(gx)[gx]
    b = 0.5 / np.bincount(gy)[gy]
    exact = sum(
        0.5 * _exact_ot(cost[gx == k][:, gy == k], 2 * a[gx == k], 2 * b[gy == k]) for k in (0, 1)
    )
    got = group_transport_costs(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b),
                                jnp.asarray(gx), jnp.asarray(gy), num_groups=2)
    np.testing.assert_allclose(float(got.sum()), exact, rtol=1e-3)
    np.testing.assert_allclose(float(got[1]), 0.5 * _exact_ot(
        cost[gx == 1][:, gy == 1], 2 * a[gx == 1], 2 * b[gy == 1]), rtol=1e-3)


def test_class_w1_blocks_equal_masked_problem():
    """The per-class padded blocks (concrete labels) and the one masked problem (traced labels)
    give the same class-wise W1; a class on one side only gives 0."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.3
    gx, gy = np.arange(40) % 3, np.arange(30) % 4  # class 3: target points only
    kw = dict(num_classes=4)
    masked = class_wasserstein1(jnp.asarray(x), jnp.asarray(gx), jnp.asarray(y), jnp.asarray(gy),
                                **kw)
    blocks = class_wasserstein1(jnp.asarray(x), jnp.asarray(gx), jnp.asarray(y), jnp.asarray(gy),
                                block=(16, 8), **kw)
    exact = [_exact_ot(np.linalg.norm(x[gx == k][:, None] - y[gy == k][None], axis=-1),
                       np.full((gx == k).sum(), 1 / (gx == k).sum()),
                       np.full((gy == k).sum(), 1 / (gy == k).sum())) for k in range(3)]
    np.testing.assert_allclose(masked[:3], exact, rtol=2e-3)
    np.testing.assert_allclose(blocks[:3], exact, rtol=2e-3)
    assert float(masked[3]) == float(blocks[3]) == 0.0


def chex_close(a, b, tol):
    for fa, fb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(fa, fb, rtol=tol, atol=1e-6)


def test_padding_invariance():
    xs, ys, xt, yt, (w, c) = _task()
    ref = tj.tta_bound(xs, ys, xt, yt, (w, c))
    pad = lambda a: np.concatenate([a, np.zeros((a.shape[0], 7), a.dtype)], 1)  # noqa: E731
    wp = np.concatenate([w, np.zeros((7, w.shape[1]), w.dtype)], 0)
    got = tj.tta_bound(pad(xs), ys, pad(xt), yt, (wp, c), width=5)
    chex_close(got, ref, rtol(PAD_RTOL, ref.bound.dtype) * 100)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    xs, ys, xt, yt, (w, c) = _task(seed=seed % 1000)
    ref = tj.tta_bound(xs, ys, xt, yt, (w, c))
    ps, pt = rng.permutation(len(ys)), rng.permutation(len(yt))
    chex_close(tj.tta_bound(xs[ps], ys[ps], xt[pt], yt[pt], (w, c)), ref, 1e-3)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    q = q.astype(np.float32)
    rot = tj.tta_bound(xs @ q, ys, xt @ q, yt, (q.T @ w, c))
    chex_close(rot, ref, 1e-3)
    # relabelling the source classes together with the head's columns
    perm = rng.permutation(3)
    inv = np.argsort(perm)
    chex_close(tj.tta_bound(xs, perm[ys], xt, yt, (w[:, inv], c[inv]),
                            label_map=np.eye(3)[:, inv]), ref, 1e-3)


def test_defaults_equal_explicit_identity():
    xs, ys, xt, yt, head = _task()
    ref = tj.tta_bound(xs, ys, xt, yt, head)
    pi = np.bincount(ys) / len(ys)
    got = tj.tta_bound(xs, ys, xt, yt, head, prior=pi, label_map=np.eye(3),
                       feature_map=(np.eye(5), np.zeros(5)))
    chex_close(got, ref, 1e-5)


def test_random_tau_bounded_by_deterministic():
    xs, ys, xt, yt, head = _task()
    det = tj.tta_bound(xs, ys, xt, yt, head)
    rnd = tj.tta_bound(xs, ys, xt, yt, head, key=jax.random.key(1))
    assert 0 < float(rnd.tau) <= float(det.tau) * (1 + 1e-6)
    np.testing.assert_allclose(rnd.wasserstein, det.wasserstein, rtol=1e-6)


def test_tau_matches_autodiff():
    xs, ys, xt, yt, (w, c) = _task()
    out = tj.tta_bound(xs, ys, xt, yt, (w, c))

    def nll(x, j):
        p = jax.nn.softmax(x @ w + c)
        return -jnp.log(p[j])  # B = I

    g = jax.vmap(jax.vmap(jax.grad(nll), (None, 0)), (0, None))(
        jnp.asarray(np.r_[xs, xt]), jnp.arange(3))
    np.testing.assert_allclose(out.tau, jnp.max(jnp.linalg.norm(g, axis=-1)), rtol=1e-4)


def test_score_is_negated_bound_and_registered():
    xs, ys, xt, yt, head = _task()
    s = tj.tta(xt, yt, source_features=xs, source_labels=ys, head=head)
    np.testing.assert_allclose(s, -tj.tta_bound(xs, ys, xt, yt, head).bound, rtol=1e-6)
    info = tj.get_metric("tta")
    assert info.inputs == "source_task" and info.higher_is_better


def test_one_sided_class_gives_reference_sentinel():
    xs, ys, xt, yt, head = _task()
    bmat = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) * 0.98 + 0.02 / 3
    out = tj.tta_bound(xs, ys, xt, yt, head, label_map=bmat)  # hard labels {0, 1}, target 0..2
    assert np.isfinite(float(out.wasserstein))
    bmat2 = np.full((3, 3), 0.01) + 0.97 * np.eye(3)[[0, 0, 2]]
    out2 = tj.tta_bound(xs, ys, xt, yt, head, label_map=bmat2 / bmat2.sum(0))
    assert float(out2.wasserstein) == 1e10  # class 1 < K=2 has target points only


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_identical_constant_features_give_zero_wasserstein(fill):
    """All-zero or constant source and target features: every transport cost is 0, so W1 = 0 and
    the bound is the weighted source loss plus the conditional entropy (finite)."""
    xs, ys, xt, yt, head = _task()
    xs, xt = np.full_like(xs, fill), np.full_like(xt, fill)
    out = tj.tta_bound(xs, ys, xt, yt, head)
    assert all(np.isfinite(float(v)) for v in jax.tree.leaves(out))
    assert float(out.wasserstein) == 0.0
    np.testing.assert_allclose(out.bound, out.weighted_source_loss + out.conditional_entropy)
    score = tj.tta(xt, yt, source_features=xs, source_labels=ys, head=head)
    np.testing.assert_allclose(score, -out.bound)


def test_singular_feature_map_uses_pseudo_inverse():
    """Without Ā, a singular A gets Ā = A⁺ (finite); a projection is its own pseudo-inverse."""
    xs, ys, xt, yt, head = _task()
    amat = np.diag([1.0, 1.0, 1.0, 0.0, 0.0]).astype(np.float32)
    bvec = np.full(5, 0.1, np.float32)
    out = tj.tta_bound(xs, ys, xt, yt, head, feature_map=(amat, bvec))
    assert all(np.isfinite(float(v)) for v in jax.tree.leaves(out))
    chex_close(out, tj.tta_bound(xs, ys, xt, yt, head, feature_map=(amat, bvec, amat)), 1e-5)


def test_settings_fields_are_documented():
    doc = tj.TTASettings.__doc__.split("Attributes:")[1]
    for f in dataclasses.fields(tj.TTASettings):
        assert re.search(rf"^      (\w+, )*{f.name}[,:]", doc, re.M), f.name


def _bad(**kw):
    xs, ys, xt, yt, head = _task()
    args = dict(source_features=xs, source_labels=ys, target_features=xt, target_labels=yt,
                head=head)
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(target_features=np.ones((50, 4), np.float32)), ValueError, "feature width"),
        (dict(head=(np.ones((4, 3)), np.zeros(3))), ValueError, "head must be"),
        (dict(head=(np.ones((5, 3)), np.zeros(2))), ValueError, "head must be"),
        (dict(head=np.ones((5, 3))), TypeError, "head must be a tuple"),
        (dict(label_map=np.ones((3, 3))), ValueError, "column-stochastic"),
        (dict(label_map=np.eye(3, 2)), ValueError, r"label_map must have shape \[c, z\]"),
        (dict(label_map=np.full((2, 3), 0.5)), ValueError, r"label_map must have shape .*\(3, 3\)"),
        (dict(label_map=np.full(3, 1.0)), ValueError, "label_map must have shape"),
        (dict(prior=np.array([0.5, 0.6, -0.1])), ValueError, "probability"),
        (dict(source_labels=np.r_[0, np.ones(59, int)]), ValueError, "empty"),
        (dict(feature_map=(np.eye(4), np.zeros(4))), ValueError, "feature_map shapes"),
        (dict(feature_map=(np.eye(5), np.full(5, np.inf))), ValueError, "feature_map contains"),
        (dict(settings=tj.TTASettings(w1_eps_rel=0.0)), ValueError, "settings.w1_eps_rel"),
        (dict(settings={"w1_eps_rel": 1e-3}), TypeError, "settings must be a TTASettings"),
    ],
)
def test_bad_input(kw, err, match):
    with pytest.raises(err, match="tta_bound: .*" + match):
        tj.tta_bound(**_bad(**kw))


def test_label_map_required_when_class_counts_differ():
    xs, ys, xt, yt, head = _task()
    with pytest.raises(ValueError, match="label_map is required"):
        tj.tta_bound(xs, ys, xt, yt % 2, head)


def test_degenerate_inputs_are_finite():
    xs, ys, xt, yt, head = _task(seed=3)
    xs[:, 0] = 1.0  # constant column
    ys = ys.copy()
    ys[:] = 2
    ys[0], ys[1] = 0, 1  # singleton classes
    out = tj.tta_bound(xs, ys, xt, yt, head)
    assert all(np.isfinite(float(v)) for v in jax.tree.leaves(out))


def test_optimize_small_runs_and_traces_once():
    xs, ys, xt, yt, head = _task()
    traces = tta_optimize_module._optimize._cache_size()
    res = tj.tta_optimize(xs, ys, xt, yt, head, key=jax.random.key(0),
                          settings=tj.TTASettings(steps=15, batch_size=30))
    assert res.losses.shape == (15,) and np.isfinite(np.asarray(res.losses)).all()
    assert res.plan_iterations.shape == (15, 2) and int(res.plan_iterations.min()) >= 1
    np.testing.assert_allclose(res.label_map.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(res.prior.sum(), 1.0, rtol=1e-5)
    again = tj.tta_bound(xs, ys, xt, yt, head, prior=res.prior, label_map=res.label_map,
                         feature_map=res.feature_map)
    chex_close(again, res.bound, 1e-4)
    # D₀ = softmax(π_S) (the reference's quirk) by default; D lr 1e-3 moves logits <= 0.015 here
    pi = np.bincount(ys) / len(ys)
    np.testing.assert_allclose(res.prior, np.exp(pi) / np.exp(pi).sum(), rtol=0.05)
    # better-founded starts: D₀ = π_S and a given label map; keyword overrides of the settings
    start = np.full((3, 3), 0.05) + 0.85 * np.eye(3)
    res2 = tj.tta_optimize(xs, ys, xt, yt, head, key=jax.random.key(0), steps=15, batch_size=30,
                           prior_init="empirical", label_map_init=start)
    np.testing.assert_allclose(res2.prior, pi, rtol=0.05)
    np.testing.assert_array_equal(np.argmax(res2.label_map, 0), np.arange(3))
    assert tta_optimize_module._optimize._cache_size() == traces + 1  # settings == overrides
    with pytest.raises(ValueError, match="prior_init"):
        tj.tta_optimize(xs, ys, xt, yt, head, key=jax.random.key(0), prior_init="pi")
    with pytest.raises(TypeError, match="tta_optimize: unknown setting.*'stepz'"):
        tj.tta_optimize(xs, ys, xt, yt, head, key=jax.random.key(0), stepz=15)
    with pytest.raises(ValueError, match="tta_optimize: settings.lambda_wd"):
        tj.tta_optimize(xs, ys, xt, yt, head, key=jax.random.key(0), lambda_wd=-1.0)


# ~25 s of CPU (1001 steps each): deselected by default (pyproject addopts `-m "not slow"`); run
# with `pytest -m slow tests/metrics/test_tta.py`.
_C4_ABOVE_FIXED = (
    "with the reference's algorithm the learned bound on c4_imbalanced ends above the "
    "fixed-transform bound (ours ~3.19 vs 3.04; a reference-faithful NumPy/POT loop gives 3.1-3.5 "
    "over seeds): tau is not in the objective and the label map follows the random start; the "
    "reference's own c1_small result (2.055) is above its fixed bound (2.028) too, so the learned "
    "tier is indicative only."
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["c1_small", pytest.param("c4_imbalanced",
                              marks=pytest.mark.xfail(reason=_C4_ABOVE_FIXED, strict=True))],
)
def test_golden_optimized(name):
    ref = _golden.load_json("tta.json")["optimized"][name]
    x, y, _ = _golden.load_input(name)
    xs, ys, xt, yt, head, bmat = derive_task(x, y)
    fixed = tj.tta_bound(xs, ys, xt, yt, head, label_map=bmat)
    res = tj.tta_optimize(xs, ys, xt, yt, head, steps=1001, key=jax.random.key(2023))
    assert abs(float(res.bound.bound) - ref["bound"]) <= 0.2
    assert float(res.bound.bound) <= float(fixed.bound)
