"""Stage 2: a run directory from the tree (args, weights, environment, stock_trainer, randaugment, fast/, train), and
tune: many such runs."""
