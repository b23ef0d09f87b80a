"""Checking and converting call-time feeds. Every error names the feed."""
from __future__ import annotations

import numpy as np

from nncc.compiler.errors import FeedError
from nncc.compiler.ir import BATCH


def expected_text(shape):
    return "(" + ", ".join("n" if d == BATCH else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def convert(node, value):
    """The feed as a C-contiguous array of the node's dtype (no copy when it already is)."""
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
    shape = node.shape
    if value.ndim != len(shape) or value.shape[1:] != tuple(shape[1:]):
        raise FeedError(f"expected shape {expected_text(shape)}, got {value.shape}", feed=node.name)
    if node.dtype == "int32":
        if value.dtype == np.int32:
            return np.ascontiguousarray(value)
        if value.dtype.kind not in "iu":
            raise FeedError(f"class labels must be integers, got dtype {value.dtype}", feed=node.name)
        if value.size and (value.min() < np.iinfo(np.int32).min or value.max() > np.iinfo(np.int32).max):
            raise FeedError("labels do not fit in int32", feed=node.name)
        return np.ascontiguousarray(value, dtype=np.int32)
    if value.dtype == np.float32:
        return np.ascontiguousarray(value)
    if value.dtype.kind not in "fiub":
        raise FeedError(f"expected float32 values, got dtype {value.dtype}", feed=node.name)
    return np.ascontiguousarray(value, dtype=np.float32)


def gather(graph, names, feeds, what, known):
    """Checked arrays for `names` from the keyword feeds, plus their common row count.

    Feeds the model has but this call does not need (labels in predict) are ignored;
    names the model does not have are an error (usually a typo).
    """
    unknown = set(feeds) - set(known)
    if unknown:
        raise FeedError(f"{what} got unknown feed(s) {sorted(unknown)}; the model's inputs are "
                        f"{list(known)}", feed=sorted(unknown)[0])
    arrays, rows = [], None
    for name in names:
        if name not in feeds:
            raise FeedError(f"missing: {what} needs {list(names)}", feed=name)
        arr = convert(graph[name], feeds[name])
        if rows is None:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            raise FeedError(f"has {arr.shape[0]} rows but {names[0]!r} has {rows}", feed=name)
        arrays.append(arr)
    if rows is None:  # the call needs no feed: the rows are those of whatever was given
        rows = next((len(np.asarray(v)) for v in feeds.values()), 1)
    return arrays, rows
