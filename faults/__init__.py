"""Fault scenarios: model, seeded planner, runner, invariant checker and report.

The shipped library of scenarios lives in `library/` (package data).
"""
