"""The simulators on real scans: the InVesalius head CT (Debian invesalius-examples) and Colin27 (mricron-data)."""

from __future__ import annotations

import math

import external
import numpy as np
import pytest
import torch

from medgan.data.degradations import DEGRADATIONS, degrade_image
from medgan.io.geometry import spacing_mm
from medgan.io.image import make_image

pytestmark = pytest.mark.external


@pytest.fixture(scope="module")
def head_planes() -> tuple[torch.Tensor, tuple[float, float]]:
    """An axial plane through the brain, [1, 1, 256, 256] in HU, and its pixel spacing."""
    volume, (_, row_mm, col_mm) = external.invesalius_head_ct()
    return torch.from_numpy(volume[60:61].astype(np.float32))[:, None], (row_mm, col_mm)


@pytest.fixture(scope="module")
def colin() -> tuple[np.ndarray, np.ndarray]:
    return external.colin27_t1()


def test_head_ct_noise_grows_as_one_over_sqrt_dose_and_brain_hu_stay(head_planes):
    planes, spacing = head_planes
    brain = (slice(None), 0, slice(96, 160), slice(96, 160))
    sd = {}
    for dose in (1.0, 0.25):
        y, _ = DEGRADATIONS.build("ct-lowdose", dose=dose, views=90)(planes, spacing, generator=1)
        noise = (y - planes)[brain]
        sd[dose] = float(noise.std())
        assert abs(float(noise.mean())) < 5.0
        assert torch.equal(y[planes < -1024], planes[planes < -1024])
    assert sd[0.25] / sd[1.0] == pytest.approx(2.0, rel=0.10)
    assert 3.0 < sd[0.25] < 200.0


def test_head_ct_through_degrade_image_keeps_geometry_and_int16():
    volume, (slice_mm, row_mm, col_mm) = external.invesalius_head_ct()
    stack = volume[59:61].transpose(2, 1, 0)[None]  # [1, i = column, j = row, k = slice]
    affine = np.diag([-col_mm, -row_mm, slice_mm, 1.0])
    image = make_image(stack, affine, {"modality": "CT"})
    out, record = degrade_image(image, "ct-lowdose", seed=0, dose=0.5, views=48)
    assert record["slice_axis"] == 2 and out.dtype == torch.int16 and out.shape == image.shape
    np.testing.assert_array_equal(np.asarray(out.affine), affine)
    replayed, _ = degrade_image(image, record=record)
    assert torch.equal(replayed.as_tensor(), out.as_tensor())


def test_colin27_rician_background_and_undersampling_identity(colin):
    t1, _ = colin
    plane = torch.from_numpy(t1[:, :, 90].astype(np.float32))[None, None]
    same = DEGRADATIONS.build("mr-undersample", acceleration=1.0)(plane, generator=0)[0]
    assert torch.allclose(same, plane, atol=1e-3)
    noisy, _ = DEGRADATIONS.build("mr-noise", snr=15.0)(plane, generator=0)
    from medgan.data.degradations.mr_fields import reference_signal

    sigma = reference_signal(plane[0]) / 15.0
    background = noisy[plane == 0].double()
    assert background.numel() > 10_000
    assert float(background.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
    assert float(background.var()) == pytest.approx((2 - math.pi / 2) * sigma**2, rel=0.06)


def test_colin27_thick_slices_spacing_and_averaging(colin):
    t1, affine = colin
    image = make_image(t1[None], affine, {"modality": "MR"})
    out, record = degrade_image(image, "thick-slices", thickness_mm=5.0)
    assert record["axis"] == 2  # isotropic: the slices are axial, across the body's long axis
    assert spacing_mm(np.asarray(out.affine)) == pytest.approx([1.0, 1.0, 5.0])
    expected = t1[..., :180].astype(np.float64).reshape(*t1.shape[:2], 36, 5).mean(axis=-1)
    assert out.shape == (1, 181, 217, 36)
    assert np.abs(out.numpy()[0] - expected).max() <= 0.5  # uint8 kept, rounded
    centre_in = affine @ np.array([90, 108, 2, 1.0])  # input slices 0..4 average to output slice 0
    np.testing.assert_allclose(np.asarray(out.affine) @ np.array([90, 108, 0, 1.0]), centre_in, atol=1e-9)


def test_colin27_motion_and_bias_keep_the_brain_recognisable(colin):
    t1, _ = colin
    plane = torch.from_numpy(t1[:, :, 90].astype(np.float32))[None, None]
    for kind in ("mr-motion", "mr-bias", "mr-gibbs"):
        y, _ = DEGRADATIONS.build(kind, severity=0.5)(plane, (1.0, 1.0), generator=0)
        correlation = np.corrcoef(y.flatten().numpy(), plane.flatten().numpy())[0, 1]
        assert 0.8 < correlation < 0.9999, (kind, correlation)
