"""Stage 5: a trained model exported to a deployment format and checked against its .pt on test (export)."""
