"""The training core: one run in memory, no processes, no run store layout.

Settings and config, models, data, the engine (it yields events), history and the
learning-rate schedules.
"""
