"""Numerai's files as plain data: the live data and features, the predictions CSV, the submission rules.

Pure functions over files and frames, used by the model workers and the run's
own steps (ensembles, neutralization, the benchmark check) alike.
"""
