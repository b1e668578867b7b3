"""Stage 2: a run directory from the tree (args, weights, stock_trainer, fast, train), and tune: many such runs."""
