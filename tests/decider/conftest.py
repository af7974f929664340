"""Hypothesis profiles for the decider's properties; HYPOTHESIS_PROFILE picks one.

ci (the default): 300 examples a property (the main property takes twice that), the same
examples on every run; the whole of tests/decider stays well under a minute. dev: 50, random. deep: 5,000, random, for a long hunt.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("deep", max_examples=5_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
