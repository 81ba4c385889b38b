"""Inference: plain functions that take a checkpoint and write scans.

    from medgan.inference import synthesize
    synthesize("runs/ct-00000/checkpoints/step_0010000.pt", count=8, out_dir="synth", format="dicom", seed=3)

`load.py` loads a checkpoint's generators, `whole_scan.py` runs one over a scan of any size,
`write.py` writes what it made, `synthesize.py` draws or translates with them, and
`enhance.py` (with `enhance_scan.py`) applies an enhancer to whole scans, keeping their geometry. Nothing here imports
`medgan.training`: both stand on `medgan.tasks`.
"""

from __future__ import annotations

from medgan.inference.enhance import enhance
from medgan.inference.load import Generators, load_generators
from medgan.inference.synthesize import synthesize
from medgan.inference.write import FORMATS

__all__ = ["FORMATS", "Generators", "enhance", "load_generators", "synthesize"]
