"""Quick probes of embeddings and checkpoints, beside the full heareval protocol."""
