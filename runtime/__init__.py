"""nncc runtime: building and caching the C library, the Trainer that drives it."""
