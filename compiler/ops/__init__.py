"""Every op nncc knows, registered on import. See registry.OpDef for what an op holds."""
from . import dropout, elementwise, linalg, losses, norm, softmax, sources, update  # noqa: F401  (registration)
from .registry import ELEMENTWISE, KERNEL, REDUCE, REGISTRY, REQUIRED, SOURCE, OpDef, get_op

__all__ = ["ELEMENTWISE", "KERNEL", "REDUCE", "REGISTRY", "REQUIRED", "SOURCE", "OpDef", "get_op"]
