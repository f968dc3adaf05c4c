"""Pretraining corpora built from the mini-HEAR sources (depends on eval.minihear, never the reverse)."""
