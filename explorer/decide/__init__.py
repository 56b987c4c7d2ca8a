"""Decide a plan: sensitivity scans, criteria compared, targets and suggested plans, the
trade-offs of the plans tried and what pruning broke; decided on one part of the data and
reported on the held-out part.
"""
