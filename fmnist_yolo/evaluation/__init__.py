"""Stage 2: a model measured on a split of the tree (evaluate, metrics, predict)."""
