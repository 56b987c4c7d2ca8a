"""Load: a model file, a data file or a demo, vetted and bounded before anything runs.

Uploaded files are untrusted: their formats are sniffed and vetted here, code-bearing
formats run only in the guarded child process, and every size is checked against
:mod:`explorer.limits`.
"""
