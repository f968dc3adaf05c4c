"""Evaluation side of hear-abt (kept outside the installed package)."""
