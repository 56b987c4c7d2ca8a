"""Take a plan out: a pruned or physically smaller model, scripts and files a user can run.
"""
