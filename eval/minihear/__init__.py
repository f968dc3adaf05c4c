"""mini-HEAR: small offline tasks in hearpreprocess's folder format, built from
real audio shipped in Debian packages (see DESIGN.md section 6).

Entry point: ``python eval/minihear/build.py --out tasks/`` (tasks) or
``--corpus corpus/`` (unlabelled pretraining audio).
"""
