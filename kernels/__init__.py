"""CUDA C sources for flowcore's GPU backends.

In the source tree this folder is `kernels/`; in the installed package it is `flowcore.kernels`
(see setup.py). The files are compiled at run time with CuPy and cached; nothing here is
imported as Python beyond this docstring.
"""
