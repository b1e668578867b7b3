"""Stage 4: run directories read for people (compare, report, plots, published)."""
