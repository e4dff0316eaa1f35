"""The benchmark drivers that write ``results/``: each runs as ``python benchmarks/NAME.py`` (``--help``
for its options) and is installed as ``voc_rl.benchmarks.NAME``; ``voc-rl bench return-error`` runs
:mod:`voc_rl.benchmarks.return_error` (an entry point of the ``voc_rl.bench`` group: the core
library never imports this package). The models, estimators and metrics they compare live in
:mod:`voc_rl` (:mod:`voc_rl.parts` fits or reuses the parts, :mod:`voc_rl.evaluation` scores them)."""
