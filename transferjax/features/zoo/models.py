"""Flax (nnx) image backbones of the offline zoo: MobileNetV2, EfficientNet-Lite0/1/2, VGG16 trunk.

Every model takes NHWC float images and has a ``features(x) -> [b, d]`` method returning the
globally average-pooled output of its last feature stage: the input of the classifier that
fine-tuning re-initialises (see ``FEATURE_LAYERS``). ``__call__`` applies the pre-trained head
(ImageNet logits / dog-breed logits) where the checkpoint has one.

All BatchNorm layers are built in inference mode (running averages): these modules are for
feature extraction. Layouts follow the checkpoints so converters can fill them (``convert.py``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "FEATURE_LAYERS",
    "ConvBN",
    "InvertedResidual",
    "MobileNetV2",
    "EfficientNetLite",
    "VGG16Trunk",
    "efficientnet_lite_config",
]

#: Which layer is "the features" per architecture (the classifier's input, pooled).
FEATURE_LAYERS = {
    "MobileNetV2": "global average pool of the last 1x1 conv (320 -> 1280, BN, ReLU6): 1280-d; "
    "the input of the classifier (torchvision `classifier`, Keras top Dense)",
    "EfficientNetLite": "global average pool of the head 1x1 conv (-> 1280, BN, ReLU6): 1280-d; "
    "the input of `_fc`",
    "VGG16Trunk": "global average pool of conv5_3 (after ReLU): 512-d; HED's side outputs and "
    "fusion layer (its task head) are not part of the trunk",
}


def _pad(kernel: int, padding: str):
    if padding == "torch":  # symmetric k//2 on each side (PyTorch Conv2d(padding=k//2))
        return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))
    if padding == "same":  # TensorFlow/Keras "SAME": the extra pixel goes bottom/right
        return "SAME"
    raise ValueError(f"padding must be 'torch' or 'same', got {padding!r}")


class ConvBN(nnx.Module):
    """Conv (no bias) + BatchNorm (inference) + optional ReLU6."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        padding: str = "torch",
        eps: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            cin,
            cout,
            (kernel, kernel),
            strides=(stride, stride),
            padding=_pad(kernel, padding),
            feature_group_count=groups,
            use_bias=False,
            precision="highest",
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(cout, epsilon=eps, use_running_average=True, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return jnp.clip(x, 0.0, 6.0) if self.act else x


class InvertedResidual(nnx.Module):
    """MobileNetV2 / EfficientNet-Lite block: 1x1 expand, kxk depthwise, 1x1 project (+ skip)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        stride: int,
        expand: int,
        kernel: int = 3,
        padding: str = "torch",
        eps: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        hidden = cin * expand
        kw = dict(padding=padding, eps=eps, rngs=rngs)
        self.expand = ConvBN(cin, hidden, 1, **kw) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride=stride, groups=hidden, **kw)
        self.project = ConvBN(hidden, cout, 1, act=False, **kw)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def _gap(x: jax.Array) -> jax.Array:
    return x.mean(axis=(1, 2))


def _stage_end_taps(blocks) -> tuple[str, ...]:
    """``blocks.i`` ending each stage before a stride-2 block, then the pooled penultimate layer."""
    starts = [i for i, b in enumerate(blocks) if b.depthwise.conv.strides == (2, 2) and i > 0]
    return tuple(f"blocks.{i - 1}" for i in starts) + ("features",)


class _InvertedResidualNet(nnx.Module):
    """What MobileNetV2 and EfficientNet-Lite share: ``stem`` -> ``blocks`` (inverted residuals)
    -> ``head`` (1x1 conv) -> global average pool (``features``) -> ``classifier``."""

    def __init_subclass__(cls, **kwargs):
        # nnx.capture (several taps in one pass) records only the methods in a class's own
        # __dict__, not inherited ones: give each architecture its own reference to them.
        super().__init_subclass__(**kwargs)
        for name, method in _InvertedResidualNet.__dict__.items():
            if (
                callable(method)
                and name not in cls.__dict__
                and (name[0] != "_" or name == "__call__")
            ):
                setattr(cls, name, method)

    def feature_map(self, x: jax.Array) -> jax.Array:
        return self.last_stage(self.before_last_stage(x))

    @property
    def last_stage_start(self) -> int:
        """Index of the first block of the last stage (the last stride-2 block)."""
        return max(i for i, b in enumerate(self.blocks) if b.depthwise.conv.strides == (2, 2))

    def before_last_stage(self, x: jax.Array) -> jax.Array:
        """Activations entering the last stage (frozen part when fine-tuning the last stage)."""
        x = self.stem(x)
        for block in self.blocks[: self.last_stage_start]:
            x = block(x)
        return x

    def last_stage(self, h: jax.Array) -> jax.Array:
        """The last stage (its blocks and the head conv): feature map before pooling."""
        for block in self.blocks[self.last_stage_start :]:
            h = block(h)
        return self.head(h)

    def features(self, x: jax.Array) -> jax.Array:
        return _gap(self.feature_map(x))

    def taps(self) -> tuple[str, ...]:
        """Layer taps for layer-wise scoring: the end of each stage, then ``features``."""
        return _stage_end_taps(self.blocks)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.features(x))


class MobileNetV2(_InvertedResidualNet):
    """MobileNetV2 1.0 (Sandler et al., CVPR 2018) in the torchvision / Keras layout.

    ``padding="torch"`` matches torchvision (symmetric padding, BN eps 1e-5);
    ``padding="same"`` with ``eps=1e-3`` matches ``keras.applications.MobileNetV2``.
    ``features(x)``: ``[b, 1280]`` (global average pool of the last conv stage).
    """

    #: (expansion t, channels c, repeats n, first stride s), from the paper's Table 2.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        padding: str = "torch",
        eps: float = 1e-5,
        rngs: nnx.Rngs,
    ):
        kw = dict(padding=padding, eps=eps, rngs=rngs)
        self.stem = ConvBN(3, 32, 3, stride=2, **kw)
        blocks, cin = [], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, stride=s if i == 0 else 1, expand=t, **kw))
                cin = c
        self.blocks = nnx.List(blocks)
        self.head = ConvBN(cin, 1280, 1, **kw)
        self.classifier = nnx.Linear(1280, num_classes, precision="highest", rngs=rngs)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def efficientnet_lite_config(variant: int) -> list[tuple[int, int, int, int, int]]:
    """Blocks ``(cin, cout, kernel, stride, expand)`` of EfficientNet-Lite{variant}.

    EfficientNet-B0's stages scaled by the Lite width/depth coefficients, with the Lite rules
    (Tan & Le; TF ``efficientnet_lite_builder``): the stem (32) and head (1280) widths and the
    repeats of the first and last stage are not scaled.
    """
    width, depth = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}[variant]
    stages = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
              (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320))  # fmt: skip
    blocks = []
    for i, (r, k, s, e, cin, cout) in enumerate(stages):
        cin = 32 if i == 0 else _round_filters(cin, width)
        cout = _round_filters(cout, width)
        fixed = i in (0, len(stages) - 1)
        repeats = r if fixed else int(math.ceil(depth * r))
        for j in range(repeats):
            blocks.append((cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
    return blocks


class EfficientNetLite(_InvertedResidualNet):
    """EfficientNet-Lite{0,1,2} (TF Lite variant: ReLU6, no squeeze-excite, fixed stem/head).

    TensorFlow "SAME" padding and BN eps 1e-3 as in the original TF checkpoints.
    ``features(x)``: ``[b, 1280]``.
    """

    def __init__(self, variant: int = 0, num_classes: int = 1000, *, rngs: nnx.Rngs):
        kw = dict(padding="same", eps=1e-3, rngs=rngs)
        self.variant = variant
        self.stem = ConvBN(3, 32, 3, stride=2, **kw)
        cfg = efficientnet_lite_config(variant)
        self.blocks = nnx.List(
            [
                InvertedResidual(ci, co, stride=s, expand=e, kernel=k, **kw)
                for ci, co, k, s, e in cfg
            ]
        )
        self.head = ConvBN(cfg[-1][1], 1280, 1, **kw)
        self.classifier = nnx.Linear(1280, num_classes, precision="highest", rngs=rngs)


class VGG16Trunk(nnx.Module):
    """The 13 conv layers of VGG16 (Simonyan & Zisserman, 2015) as used by HED (no pool5/FC).

    3x3 convs with bias and ReLU, 2x2 max pooling (TF "SAME") between the 5 blocks.
    ``features(x)``: ``[b, 512]`` (global average pool of conv5_3). ``__call__`` returns the same
    (HED's edge head is a dense-prediction head, not a classifier).
    """

    WIDTHS: Sequence[Sequence[int]] = ((64, 64), (128, 128), (256, 256, 256),
                                       (512, 512, 512), (512, 512, 512))  # fmt: skip

    def __init__(self, *, rngs: nnx.Rngs):
        convs, cin = [], 3
        for block in self.WIDTHS:
            for cout in block:
                convs.append(
                    nnx.Conv(cin, cout, (3, 3), padding="SAME", precision="highest", rngs=rngs)
                )
                cin = cout
        self.convs = nnx.List(convs)

    def _blocks(self, x: jax.Array, blocks: range) -> jax.Array:
        for b in blocks:
            if b > 0:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            start = sum(len(w) for w in self.WIDTHS[:b])
            for i in range(start, start + len(self.WIDTHS[b])):
                x = jax.nn.relu(self.convs[i](x))
        return x

    def feature_map(self, x: jax.Array) -> jax.Array:
        return self.last_stage(self.before_last_stage(x))

    def before_last_stage(self, x: jax.Array) -> jax.Array:
        """conv4_3 output (frozen part when fine-tuning block 5)."""
        return self._blocks(x, range(4))

    def last_stage(self, h: jax.Array) -> jax.Array:
        """pool4 and block 5 (conv5_1..conv5_3)."""
        return self._blocks(h, range(4, 5))

    def features(self, x: jax.Array) -> jax.Array:
        return _gap(self.feature_map(x))

    def taps(self) -> tuple[str, ...]:
        """Layer taps: the last conv of blocks 2-4 (before its ReLU), then ``features``."""
        ends = [sum(len(w) for w in self.WIDTHS[: b + 1]) - 1 for b in range(1, 4)]
        return tuple(f"convs.{i}" for i in ends) + ("features",)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.features(x)
