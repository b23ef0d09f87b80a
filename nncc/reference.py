"""The NumPy float64 reference interpreter, the oracle compiled trainers are checked against."""
from nncc.compiler.interpreter import Interpreter

__all__ = ["Interpreter"]
