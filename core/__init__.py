"""Merger's engine: checkpoint I/O, merge methods, alignment and jobs, with no Qt.

The GUI (`merger_app`) and the CLI (`core.cli`) are two fronts over this package.
"""

__version__ = "0.1.0"
