"""Guided lessons: markdown files with a live experiment each, checked and run here.

A lesson file (``assets/lessons/NN-slug.md``, see its README) names an experiment and its
parameters, asks a "predict first" question and explains the result. :mod:`.files` reads
and checks the files (a broken one becomes one message, the others still load);
:mod:`.experiments` holds the registry of experiments, each a call into the real engine
(evaluator, ``decide/``, ``finetune/``) on a demo model; :mod:`.outcome` is what an
experiment returns: its numbers, the figure to draw, which choice its numbers make right and
the plan to open in the full page. Like the CLI, this package calls several stages; only the
app's Learn page calls it. No Streamlit here.
"""
