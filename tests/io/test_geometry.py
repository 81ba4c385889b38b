"""Geometry helpers against hand-computed truths."""

from __future__ import annotations

import numpy as np
import pytest
from external import rotation

from medgan.io.geometry import (
    affine_from_dicom,
    affine_from_sitk,
    flip_lps_ras,
    is_sheared,
    orientation_code,
    sitk_geometry_from_affine,
    spacing_mm,
)


def test_dicom_affine_maps_pixels_to_patient_positions():
    r = rotation(0, 20) @ rotation(2, -35)
    row, col = r[:, 0], r[:, 1]
    origin = np.array([-120.5, 33.25, 71.0])
    step = 2.5 * np.cross(row, col) + 0.4 * col  # tilted stack
    affine = affine_from_dicom(row, col, (0.8, 0.6), origin, step)  # (row spacing, column spacing)
    # Pixel (column c=7, row r=3) of slice 5, by the DICOM formula in LPS, then flipped to RAS.
    lps = origin + row * 0.6 * 7 + col * 0.8 * 3 + 5 * step
    expected = np.array([-lps[0], -lps[1], lps[2]])
    np.testing.assert_allclose((affine @ [7, 3, 5, 1])[:3], expected, atol=1e-12)
    np.testing.assert_allclose(spacing_mm(affine)[:2], [0.6, 0.8])
    assert is_sheared(affine)


def test_flip_is_an_involution():
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(flip_lps_ras(flip_lps_ras(a)), a)


def test_sitk_round_trip_and_refuses_shear():
    direction = tuple(rotation(1, 30).ravel())
    affine = affine_from_sitk(direction, (1.0, 2.0, 3.0), (10.0, -5.0, 2.0))
    d, s, o = sitk_geometry_from_affine(affine)
    np.testing.assert_allclose(d, direction, atol=1e-12)
    np.testing.assert_allclose(s, (1.0, 2.0, 3.0))
    np.testing.assert_allclose(o, (10.0, -5.0, 2.0))
    sheared = affine.copy()
    sheared[:3, 2] += sheared[:3, 0] * 0.2
    with pytest.raises(ValueError, match="sheared"):
        sitk_geometry_from_affine(sheared)


@pytest.mark.parametrize(
    ("diag", "code"),
    [((1, 1, 1), "RAS"), ((-1, -1, 1), "LPS"), ((-1, 1, -1), "LAI")],
)
def test_orientation_codes(diag, code):
    assert orientation_code(np.diag([*diag, 1.0])) == code


def test_2d_sitk_affine():
    affine = affine_from_sitk((1.0, 0.0, 0.0, 1.0), (0.5, 0.7), (3.0, 4.0))
    np.testing.assert_allclose(affine[:3, 3], [-3.0, -4.0, 0.0])
    np.testing.assert_allclose(np.diag(affine)[:2], [-0.5, -0.7])
