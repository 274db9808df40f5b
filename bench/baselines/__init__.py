"""Plain NumPy re-implementations of the references' math (float64), one module per metric.

``python -m bench metrics`` times every registered metric; for a metric ``<name>`` it looks for
``bench/baselines/<name>.py`` here and, when present, times it next to the JAX call. A module
exposes:

- ``reference(...) -> float`` (a dict of raw terms for pool-relative metrics), called with what the
  metric reads: ``reference(features, labels)``; ``reference(features)`` for label-free metrics;
  ``reference(source_probs, labels)`` / ``reference(source_labels, labels)`` for the metrics that
  read a source model's probabilities / hard labels;
- ``DESCRIPTION = "..."``: one line for the results table;
- optional ``VARIANTS``: extra rows, each a dict with ``"label"`` and any of
  ``"options"`` (keyword options of the registered function), ``"call"`` (a function used in place
  of the registered one, called with the same arguments), ``"reference_options"`` (keyword options
  of ``reference``), ``"reference"`` (a function used in place of ``reference``; ``None``: no NumPy
  timing for that row) and ``"description"``;
- optional ``MAX_ROWS``: cases with more rows are skipped (a bench run that would take too long).

Modules whose name starts with ``_`` hold pieces shared by several baselines.
"""
