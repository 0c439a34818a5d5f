"""IEG (CVPR 2020) and its L2R / supervised baselines; entry point ``python -m methods.ieg.main``."""
