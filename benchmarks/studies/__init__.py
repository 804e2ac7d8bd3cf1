"""The project's studies, each a plug-in that registers itself with the core
(:func:`benchmarks.core.registry.register`) when imported. This import list is the whole discovery:
``import benchmarks.studies`` registers these three, in this order of their ``order`` keys;
``python -m benchmarks`` imports it before it parses any suite. A study imports the core (and the
report's renderer) and nothing of another study.
"""

from . import classification, complexity, detection

__all__ = ["complexity", "detection", "classification"]
