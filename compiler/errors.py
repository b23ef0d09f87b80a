"""Errors users see. Each names the node, edge or feed it is about."""


class NNCCError(Exception):
    """Base class of every error nncc raises on purpose."""


class GraphError(NNCCError, ValueError):
    """The user's graph is malformed: names the node (and edge) at fault."""

    def __init__(self, message, node=None, edge=None):
        self.node = node
        self.edge = edge
        where = []
        if node is not None:
            where.append(f"node {node!r}")
        if edge is not None:
            where.append(f"edge {edge[0]!r} -> {edge[1]!r}")
        prefix = (" and ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class ShapeError(GraphError):
    """Shapes of a node's inputs do not fit its op."""


class FeedError(NNCCError, ValueError):
    """A call-time input is missing or has the wrong shape, dtype or values."""

    def __init__(self, message, feed=None):
        self.feed = feed
        super().__init__((f"feed {feed!r}: " if feed is not None else "") + message)


class CheckpointError(NNCCError, ValueError):
    """A checkpoint does not fit the trainer it is loaded into."""


class BuildError(NNCCError, RuntimeError):
    """The C compiler rejected generated code: always an nncc bug."""
