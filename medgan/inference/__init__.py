"""Inference: plain functions that take a checkpoint and write scans.

from medgan.inference import synthesize
synthesize("runs/ct-00000/checkpoints/step_0010000.pt", count=8, out_dir="synth", format="dicom", seed=3)
"""

from __future__ import annotations

from medgan.inference.synthesize import FORMATS, load_generators, synthesize

__all__ = ["FORMATS", "load_generators", "synthesize"]
