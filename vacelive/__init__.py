"""vacelive: real-time causal Wan2.1 + VACE video for live performance.

The repository keeps one folder per part (engine/, bridge/, presets/, touchdesigner/); they
install as the subpackages of this one package (setup.py maps each folder), so site-packages
holds nothing top-level but `vacelive`, and a checkout and an install import the same names.
Importing this package imports nothing heavy: the relay side runs without torch.
"""
__version__ = "0.2.0"
