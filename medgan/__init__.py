"""medgan: medical image synthesis, enhancement and lesion simulation with GANs.

Importing medgan has no side effects: no global torch flags, no logging handlers, no prints.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
