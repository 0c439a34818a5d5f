"""Launchers: ``launchers/slurm.py`` (submitit: SLURM, local, debug) and ``launchers/collect.py``.

A package so that the submitted callable is pickled by reference (``launchers.slurm.Trainer``) and
imported again inside the job from the repository (or the container's copy of it).
"""
