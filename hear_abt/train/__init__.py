"""Barlow Twins pretraining for ABT: `python -m hear_abt.train` (see __main__)."""
