"""lnl: learning with noisy labels — LRA-Diffusion, PLReMix/DivideMix, DMLP, IEG and NMTune on shared
C++/CUDA kernels. ``import lnl`` is cheap and never needs the compiled extension (see ``lnl._ext``)."""

__version__ = "0.1.0"
