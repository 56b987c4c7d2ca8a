"""Recover accuracy: fine-tuning with the plan's masks fixed, and iterative pruning.
"""
