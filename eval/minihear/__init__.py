"""mini-HEAR: small offline tasks in hearpreprocess's folder format, built from
real audio shipped in Debian packages.

Entry point: ``python -m eval.minihear.build --out tasks/``. The pretraining
corpus from the same sources is eval.corpus (which imports this package,
never the reverse).
"""
