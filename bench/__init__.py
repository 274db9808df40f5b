"""Benchmarks of transferjax: one entry point, ``python -m bench <command>`` from the repository
root (``python -m bench --help`` lists the commands).

- ``metrics`` (:mod:`bench.metrics`): every registered metric on the standard cases against its
  NumPy baseline (:mod:`bench.baselines`) and the Gram + ``eigh`` limit;
- ``hub`` (:mod:`bench.hub`): ``score_hub`` against a loop over the single-model metric;
- ``stream`` (:mod:`bench.stream`): LogME over 10⁶ streamed rows;
- ``distributed`` (:mod:`bench.distributed`): streamed statistics in 1 vs 2 processes;
- ``tta`` (``bench/bench_tta.py``): the TTA bound and ``tta_optimize``;
- ``realhub`` (:mod:`bench.realhub`): ranking six real checkpoints against transfer accuracies;
- ``example-hub`` (:mod:`bench.example_hub`): regenerate the example hub in ``transferjax/data``.

Timings are appended as dated sections to ``bench/RESULTS.md`` (:func:`bench.common.write_section`);
the real hub writes its report to ``bench/realhub/RESULTS.md``.
"""
