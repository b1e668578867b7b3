"""Stage 1: the Fashion-MNIST files in, the Ultralytics class-folder tree out.

idx, sources, prepare, tree (the contract), check, link, workers.
"""
