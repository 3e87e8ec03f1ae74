"""Merge methods and their registry.

Every method module is imported here explicitly and its spec listed in `REGISTRY`;
this is the only place a method is registered.
"""

from core.methods import linear, rebasin, slerp, task_vectors
from core.methods.registry import MethodSpec, Needs, Param, Registry

REGISTRY = Registry([linear.SPEC, slerp.SPEC, *task_vectors.SPECS, *rebasin.SPECS])

__all__ = ["REGISTRY", "MethodSpec", "Needs", "Param", "Registry"]
