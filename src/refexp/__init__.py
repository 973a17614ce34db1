"""refexp: grounding referring expressions in images, reproducibly."""
__version__ = "0.1.0"
