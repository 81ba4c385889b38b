"""Fixtures for the study's tests: a checkpoint's generator stood in for by a tiny truncating StyleGAN."""

from __future__ import annotations

import types

import pytest
import torch


@pytest.fixture
def drawn_psi(monkeypatch) -> list:
    """Every checkpoint loads as a 16 x 16 StyleGAN whose own psi is 0.9, and `drawn_slices` returns 10 random
    slices; the returned list collects the psi each draw was asked for (None: the generator's own)."""
    import medgan.inference
    from benchmarks.study import evaluation
    from medgan.models import build_generator

    g = build_generator("stylegan", spatial_dims=2, image_size=16, latent_dim=8, style_dim=8, mapping_layers=1,
                        base_channels=4, max_channels=4, truncation_psi=0.9).eval()  # fmt: skip
    monkeypatch.setattr(medgan.inference, "load_generators", lambda path, device: types.SimpleNamespace(
        output=g, record={}))  # fmt: skip
    asked: list = []
    monkeypatch.setattr(evaluation, "drawn_slices", lambda *a: asked.append(a[-1]) or torch.rand(10, 16, 16))
    return asked
