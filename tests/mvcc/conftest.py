"""Hypothesis profiles for the MVCC tests: HYPOTHESIS_PROFILE=noshrink makes a
failing property report its first counterexample at once (for mutation runs)."""

from hypothesis import Phase, settings

settings.register_profile(
    "noshrink", phases=[Phase.explicit, Phase.reuse, Phase.generate], print_blob=False
)
