"""Kthena's autoscaling algorithm as pure functions and small state objects (spec §4).

Nothing here does I/O or reads the clock: every time-dependent call takes ``now`` (seconds).
"""
