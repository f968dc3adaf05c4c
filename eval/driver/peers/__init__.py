"""Wrapper HEAR modules of peer models; the driver puts this folder on its runners' PYTHONPATH."""
