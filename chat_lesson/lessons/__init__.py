"""The course's helpers: one module per lesson, with its exercises and figures.

Nothing in ``protocol``, ``chat`` or ``tap`` imports from here.
"""
