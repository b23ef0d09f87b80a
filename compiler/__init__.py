"""The nncc compiler: graph IR, op registry, passes, lowering and C emission."""
