"""Stage 3: a model measured on a split of the tree (evaluate, metrics, predict)."""
