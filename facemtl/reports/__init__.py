"""Reports built on :mod:`facemtl.metrics`: evaluation of a run, ablation tables, task correlations,
training-curve figures. Each writes CSV / markdown / JSON / PNG files into an output folder,
atomically (a failed command leaves no partial report).

- :func:`facemtl.reports.evaluate.evaluate`     ``facemtl evaluate``
- :func:`facemtl.reports.ablation_plan.plan_ablation` / :func:`facemtl.reports.ablate.run_ablation`  ``facemtl ablate``
- :func:`facemtl.reports.correlate.correlate`   ``facemtl correlate``
- :func:`facemtl.reports.curves.curve_figures`  ``facemtl plot``

Definitions of every number: docs/reports.md.
"""
