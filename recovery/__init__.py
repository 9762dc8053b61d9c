"""Recovery procedures: plan (pure) from observed state, then execute Step by Step.

Each procedure is used both by the scenarios and by ``chaos recover`` at 3 a.m.
"""
