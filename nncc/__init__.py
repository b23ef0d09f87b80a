"""nncc: compile neural-network training (forward, backward, update) to fused C."""
from nncc.compiler.errors import BuildError, CheckpointError, FeedError, GraphError, NNCCError, ShapeError
from nncc import reference, schedules, testing
from nncc.builder import GraphBuilder
from nncc.compiler.optimizers import SGD, Adam, AdamW
from nncc.runtime.checkpoint import load
from nncc.runtime.compile import compile_graph as compile
from nncc.runtime.trainer import Trainer

__version__ = "0.1.0"
__all__ = ["compile", "load", "Trainer", "GraphBuilder", "SGD", "Adam", "AdamW", "reference", "schedules", "testing", "BuildError", "CheckpointError", "FeedError", "GraphError", "NNCCError", "ShapeError"]
