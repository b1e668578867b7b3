"""Stage 3: a run directory from the tree (args, weights, trainer, fast, train)."""
