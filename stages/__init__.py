"""Thin stage CLIs over refexp (python -m stages.<name>). Importing the package pins the CPU kernel
path (refexp.numerics) before any stage module imports torch."""
from refexp.numerics import pin_cpu_numerics as _pin

_pin()
