"""Power planning: the log10 p each test should give, before marking or auditing.

A prediction is the test's exact null law (:mod:`~radioactive.plan.laws`: the same code the test runs, on
simulated observations) applied to a response model fitted on measured runs (:mod:`~radioactive.plan.response`:
mean per-class effect ``a q^b`` per test family and architecture, spreads proportional to it), read from
experiment records (:mod:`~radioactive.plan.measured`). :mod:`~radioactive.plan.predict` adds the smallest
fraction reaching a target and labels extrapolations; :mod:`~radioactive.plan.validate` checks the whole chain by
leaving measured cells out.

Examples:
    >>> import math
    >>> import numpy as np
    >>> from radioactive.plan import Budget, parse_test, predict_log10_p
    >>> null = predict_log10_p(parse_test("whitebox"), Budget(classes=10, dim=128), None, 0.0, draws=2000)
    >>> bool(abs(float(np.median(null)) - math.log10(0.5)) < 0.05)   # zero response: the exact null's median
    True
"""

from __future__ import annotations

from .catalogue import DEFAULT_TESTS, Budget, TestSpec, floor_log10_p, null_description, parse_test
from .laws import simulate_log10_p
from .measured import Observation, load_observations
from .predict import plan, predict_log10_p, required_effect, resolve_budget
from .response import Response, fit_response
from .validate import leave_one_out, summarise

__all__ = ["Budget", "DEFAULT_TESTS", "Observation", "Response", "TestSpec", "fit_response", "floor_log10_p",
           "leave_one_out", "load_observations", "null_description", "parse_test", "plan", "predict_log10_p",
           "required_effect", "resolve_budget", "simulate_log10_p", "summarise"]
