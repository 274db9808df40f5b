"""transferjax.features.extract / extract_module with tiny random-parameter models."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

from transferjax.features import extract, extract_module, pool_features  # noqa: E402


class Tiny(nnx.Module):
    """Conv -> BN -> ReLU -> pooled features -> head, like a zoo model."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)
        self.head = nnx.Linear(6, 2, rngs=rngs)

    def features(self, x):
        return jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


def _images(n=10, size=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _apply(w, x):  # [b, h, w, 3] -> [b, h, w, 4]
    return jnp.tanh(x @ w)


W = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)


def test_matches_unbatched_forward_and_drops_padding():
    x = _images(10)
    want = np.asarray(jnp.tanh(x @ W).mean(axis=(1, 2)))
    for b in (1, 3, 4, 10, 64):  # 10 % 3 and 10 % 4 leave a padded last batch
        got = extract(_apply, W, x, batch_size=b, progress=False)
        assert got.shape == (10, 4) and isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_one_compile_for_all_batches():
    traces = []

    def apply(w, x):
        traces.append(x.shape)
        return x @ w

    extract(apply, W, _images(11), batch_size=4, progress=False)
    assert traces == [(4, 8, 8, 3)]  # the last batch (3 rows) was padded, not retraced


def test_pooling_modes():
    x = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
    np.testing.assert_allclose(pool_features(x, "mean"), x.mean(axis=(1, 2)))
    np.testing.assert_allclose(pool_features(x, "max"), x.max(axis=(1, 2)))
    assert pool_features(x, "flatten").shape == (2, 18)
    assert pool_features(x[:, 0, 0], "mean").shape == (2, 2)
    got = extract(_apply, W, _images(5), batch_size=2, pool="max", progress=False)
    np.testing.assert_allclose(got, np.tanh(_images(5) @ W).max(axis=(1, 2)), rtol=1e-6)


def test_linen_style_method_argument():
    calls = []

    def apply(params, x, method=None):
        calls.append(method)
        return x.mean(axis=(1, 2)) * params

    got = extract(apply, 2.0, _images(4), batch_size=2, layer="features", progress=False)
    assert set(calls) == {"features"}
    np.testing.assert_allclose(got, 2.0 * _images(4).mean(axis=(1, 2)), rtol=1e-6)


def test_module_default_uses_features_method_in_eval_mode():
    model = Tiny(nnx.Rngs(0))
    x = _images(9)
    got = extract_module(model, x, batch_size=4, progress=False)
    model.eval()
    want = np.asarray(model.features(jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # extract(module, images) forwards to extract_module
    np.testing.assert_allclose(extract(model, x, batch_size=5, progress=False), want, rtol=1e-5)


def test_module_not_mutated_and_batch_independent():
    model = Tiny(nnx.Rngs(0))  # train mode: BN would use batch statistics
    x = _images(9)
    a = extract_module(model, x, batch_size=2, progress=False)
    b = extract_module(model, x, batch_size=9, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # inference BN: per-sample
    assert model.bn.use_running_average is False


def test_layer_selection():
    model = Tiny(nnx.Rngs(0))
    x = _images(4)
    model.eval()
    logits = extract_module(model, x, layer="__call__", batch_size=4, progress=False)
    np.testing.assert_allclose(logits, np.asarray(model(jnp.asarray(x))), rtol=1e-5, atol=1e-6)
    bn = extract_module(model, x, layer="bn", batch_size=4, progress=False)  # captured submodule
    want = np.asarray(model.bn(model.conv(jnp.asarray(x))).mean(axis=(1, 2)))
    np.testing.assert_allclose(bn, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer 'nope'"):
        extract_module(model, x, layer="nope", progress=False)


def test_progress_bar_on_stderr(capsys):
    extract(_apply, W, _images(5), batch_size=2)
    err = capsys.readouterr().err
    assert "3/3" in err and "batch" in err and err.endswith("\n")
    seen = []
    extract(_apply, W, _images(5), batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    extract(_apply, W, _images(5), batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "images, exc, match",
    [
        (np.zeros((4, 8, 8), np.float32), ValueError, "NHWC"),
        (np.zeros((2, 4, 8, 8, 3), np.float32), ValueError, "NHWC"),
        (np.zeros((4, 8, 8, 3), np.uint8), TypeError, "floating point"),
        (np.zeros((4, 8, 8, 3), bool), TypeError, "floating point"),
        (np.zeros((0, 8, 8, 3), np.float32), ValueError, "empty"),
    ],
)
def test_bad_images(images, exc, match):
    with pytest.raises(exc, match=match):
        extract(_apply, W, images, progress=False)
    with pytest.raises(exc, match=match):
        extract_module(Tiny(nnx.Rngs(0)), images, progress=False)


def test_non_finite_features():
    x = _images(6)
    x[4, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite.*first at index 4"):
        extract(_apply, W, x, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        extract(lambda w, x: jnp.log(x - 10.0) @ w, W, _images(3), progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        extract(_apply, W, _images(3), batch_size=0, progress=False)
    with pytest.raises(TypeError, match="batch_size"):
        extract(_apply, W, _images(3), batch_size=2.0, progress=False)
    with pytest.raises(ValueError, match="pool"):
        extract(_apply, W, _images(3), pool="median", progress=False)
    with pytest.raises(TypeError, match="callable"):
        extract("model", W, _images(3), progress=False)
    with pytest.raises(TypeError, match="nnx.Module"):
        extract_module(lambda x: x, _images(3), progress=False)


_SHARDED = textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp
    from flax import nnx
    from transferjax.features import extract, extract_module
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",))
    x = np.random.default_rng(0).normal(size=(10, 8, 8, 3)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    seen = []
    def apply(w, xb):
        seen.append(xb.shape)
        return jnp.tanh(xb @ w)
    got = extract(apply, w, x, batch_size=3, mesh=mesh, progress=False)
    assert seen == [(4, 8, 8, 3)], seen  # rounded up to a multiple of 4 devices
    np.testing.assert_allclose(got, np.tanh(x @ w).mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
    m = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
    a = extract_module(m, x, batch_size=8, mesh=mesh, progress=False)
    b = extract_module(m, x, batch_size=8, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    print("SHARDED OK")
    """
)


def test_sharded_batches_in_subprocess():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED OK" in out.stdout


def test_import_transferjax_does_not_import_flax():
    code = "import sys, transferjax; assert 'flax' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_lazy_features_attribute():
    import transferjax as tj

    assert tj.features.extract is extract
    with pytest.raises(AttributeError):
        tj.no_such_thing  # noqa: B018


def test_several_layers_from_one_pass():
    """layers=[...] returns every tap from one forward pass, each equal to its own extraction."""
    model = Tiny(nnx.Rngs(0))
    x = _images(6)
    taps = extract_module(model, x, layers=["bn", "__call__", "features"], batch_size=4,
                          progress=False)
    assert list(taps) == ["bn", "__call__", "features"]
    for name, got in taps.items():
        one = extract_module(model, x, layer=name, batch_size=4, progress=False)
        np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer 'nope'"):
        extract_module(model, x, layers=["bn", "nope"], progress=False)
    with pytest.raises(TypeError, match="layer= or layers="):
        extract_module(model, x, layer="bn", layers=["bn"], progress=False)


def test_linen_layers_from_capture_intermediates():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(5, name="body")(x)
            return nn.Dense(2, name="head")(jnp.tanh(h))

    net = Net()
    x = _images(5)
    params = net.init(jax.random.key(0), jnp.asarray(x[:1]))
    taps = extract(net.apply, params, x, layers=["body", "head"], batch_size=4, progress=False)
    np.testing.assert_allclose(taps["head"], extract(net.apply, params, x, batch_size=4,
                                                     progress=False), rtol=1e-5, atol=1e-6)
    assert taps["body"].shape == (5, 5)


def test_zoo_taps_come_from_one_pass():
    from transferjax.features.zoo.models import MobileNetV2

    model = MobileNetV2(num_classes=3, rngs=nnx.Rngs(0))
    x = _images(2, size=32)
    taps = extract_module(model, x, layers=model.taps(), batch_size=2, progress=False)
    assert list(taps) == list(model.taps()) and taps["features"].shape == (2, 1280)
    np.testing.assert_allclose(
        taps["features"], extract_module(model, x, batch_size=2, progress=False), rtol=1e-5,
        atol=1e-6,
    )
    widths = [v.shape[1] for v in taps.values()]
    assert widths == sorted(widths)  # stages widen towards the penultimate layer
