"""Lesion shapes: volume calibration, partial volume, compartments, orientation on oblique grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medgan.lesions.models import LESION_MODELS, random_rotation, sample_parameters
from medgan.lesions.record import Compartments, ShapeParams
from medgan.lesions.shapes import extent_mm, inscribed_mm, render_shape, volume_scale


def _render(shape, compartments, linear):
    linear = torch.as_tensor(linear, dtype=torch.float32)
    spacing = np.linalg.norm(np.asarray(linear), axis=0)
    half = [math.ceil((extent_mm(shape) + 2) / h) + 1 for h in spacing]
    return render_shape(shape, compartments, linear, half), float(abs(np.linalg.det(np.asarray(linear))))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.6, 0.6, 5.0), (2.0, 2.0, 3.0)])
@pytest.mark.parametrize("preset", LESION_MODELS.names())
def test_volume_matches_the_requested_diameter(spacing, preset):
    rng = np.random.default_rng(5)
    model = LESION_MODELS.build(preset, spiculation_probability=1.0) if preset == "ct-lung-nodule" else \
        LESION_MODELS.build(preset)  # fmt: skip
    shape, compartments, _, _ = sample_parameters(model, rng, "HU")
    rendered, voxel_mm3 = _render(shape, compartments, np.diag(spacing))
    target = math.pi / 6 * shape.diameter_mm**3
    assert float(rendered.occupancy.sum()) * voxel_mm3 == pytest.approx(target, rel=0.03)
    assert abs(int(rendered.mask.sum()) - float(rendered.occupancy.sum())) <= 0.5 + 1e-3
    assert float(rendered.occupancy.min()) >= 0 and float(rendered.occupancy.max()) <= 1
    for part in (rendered.rim, rendered.core, rendered.calcification):
        assert bool((part <= rendered.occupancy + 1e-6).all())
    assert inscribed_mm(shape) <= min(shape.axes_mm) < extent_mm(shape)


def test_a_lesion_smaller_than_a_voxel_still_gets_a_mask():
    shape = ShapeParams(diameter_mm=2.0, axes_mm=[1.0, 1.0, 1.0], rotation=np.eye(3).tolist(), subvoxel=[0, 0, 0.5])
    rendered, _ = _render(shape, Compartments(), np.diag([0.7, 0.7, 5.0]))
    assert int(rendered.mask.sum()) >= 1


def test_compartment_volumes():
    shape = ShapeParams(diameter_mm=20.0, axes_mm=[10.0, 10.0, 10.0], rotation=np.eye(3).tolist())
    compartments = Compartments(rim_mm=2.0, core_fraction=0.5, calcifications=[[0.0, 0.0, 0.6, 1.5]], halo_mm=4.0)
    rendered, voxel = _render(shape, compartments, np.diag([0.5, 0.5, 0.5]))
    assert float(rendered.rim.sum()) * voxel == pytest.approx(4 / 3 * math.pi * (10**3 - 8**3), rel=0.03)
    assert float(rendered.core.sum()) * voxel == pytest.approx(4 / 3 * math.pi * 5**3, rel=0.03)
    assert float(rendered.calcification.sum()) * voxel == pytest.approx(4 / 3 * math.pi * 1.5**3, rel=0.05)
    assert float(rendered.halo.max()) == 1.0 and float(rendered.halo[rendered.distance_mm > 4.0].max()) == 0.0


def test_orientation_follows_the_world_on_an_oblique_grid():
    """An elongated ellipsoid's long axis points along the record's first rotation column in RAS millimetres,
    whatever the voxel grid's orientation."""
    rotation = random_rotation(np.random.default_rng(1))
    shape = ShapeParams(diameter_mm=16.0, axes_mm=[1.0, 0.4, 0.4], rotation=rotation.tolist())
    shape.axes_mm = [a * volume_scale(shape) for a in shape.axes_mm]
    grid_turn = random_rotation(np.random.default_rng(2))
    linear = grid_turn @ np.diag([0.8, 0.9, 1.1])
    rendered, voxel = _render(shape, Compartments(), linear)
    index = torch.stack(torch.meshgrid(*[torch.arange(-h, h + 1) for h in rendered.half], indexing="ij"), -1)
    points = index[rendered.mask].double().numpy() @ linear.T
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert abs(vt[0] @ rotation[:, 0]) > 0.99
    assert np.linalg.norm(points.mean(0)) < 0.5  # centred on the centre (subvoxel 0)
    assert float(rendered.occupancy.sum()) * voxel == pytest.approx(math.pi / 6 * 16.0**3, rel=0.02)
