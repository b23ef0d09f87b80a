"""nncc: compile neural-network training (forward, backward, update) to fused C."""
from nncc.compiler.errors import BuildError, CheckpointError, FeedError, GraphError, NNCCError, ShapeError
from nncc.compiler.optimizers import SGD

__version__ = "0.1.0"
__all__ = ["SGD", "BuildError", "CheckpointError", "FeedError", "GraphError", "NNCCError", "ShapeError"]
