"""The generated results of README.md (one headline table) and docs/results.md (every table), by section.

Every number these modules write comes from a committed record: ``benchmarks/results/*.json``, the experiment
outputs under ``results/`` or the held-out suite's runs. ``scripts/update_readme.py`` is the one entry point
(``--check`` compares both files with what the records give); :mod:`.documents` assembles the two texts.

Modules, one section each: :mod:`.common` (paths, loading, number format), :mod:`.benchmarks` (marking,
large trees, calibration, white-box speed, fuzzing, kill and resume), :mod:`.demo`, :mod:`.grids` (the
Fashion-MNIST grids and power planning), :mod:`.plan_classes` (power planning at 100 classes), :mod:`.suites`
(held-out suite, reference counts, two owners), :mod:`.robustness` (the treatments table), :mod:`.headline` (the
README's "what to expect").
"""
