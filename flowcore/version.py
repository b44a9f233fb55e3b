"""The version of the mespot distribution (flowcore, spotting and mespot ship together).

It lives at the bottom layer because stores and runs record it; `mespot.__version__` is this.
"""

__version__ = "0.1.0"
