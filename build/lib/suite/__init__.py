"""suite: reproducible benchmark and ablation studies for deep learning.

    make study STUDY=regularization    # or: python -m suite study regularization
"""

__version__ = "0.1.0"
