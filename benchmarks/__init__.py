"""Speed and scale measurements (python -m benchmarks.<name>); importing the package pins the CPU
kernel path (refexp.numerics), as the stages do."""
from refexp.numerics import pin_cpu_numerics as _pin

_pin()
