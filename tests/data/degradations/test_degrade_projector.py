"""The parallel-beam projector and FBP against scikit-image's radon/iradon and against analytic disks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from medgan.data.degradations.projector import WINDOWS, detector_geometry, fbp, project, view_angles

SIZE = 65  # odd: scikit-image puts the centre at size // 2, medgan at (size - 1) / 2; they agree here
VIEWS = 90


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return resize(shepp_logan_phantom(), (SIZE, SIZE), anti_aliasing=True)


@pytest.fixture(scope="module")
def theta_deg() -> np.ndarray:
    return np.arange(VIEWS) * 180.0 / VIEWS


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_projection_matches_skimage_radon(phantom, theta_deg):
    reference = radon(phantom, theta_deg, circle=True)  # [bins, views]
    angles = view_angles(VIEWS, dtype=torch.float64)
    mine = project(torch.from_numpy(phantom)[None], angles, bins=SIZE)[0].numpy().T
    assert _relative(mine, reference) < 1e-6


def test_default_detector_sees_the_whole_plane(phantom, theta_deg):
    reference = radon(phantom, theta_deg, circle=True)
    bins, bin_mm = detector_geometry((SIZE, SIZE), (1.0, 1.0))
    assert bins % 2 == 1 and bins >= math.hypot(SIZE - 1, SIZE - 1) and bin_mm == 1.0
    full = project(torch.from_numpy(phantom)[None], view_angles(VIEWS, dtype=torch.float64))[0].numpy().T
    margin = (bins - SIZE) // 2
    assert _relative(full[margin : margin + SIZE], reference) < 1e-6
    assert np.abs(full[:margin]).max() == 0 and np.abs(full[margin + SIZE :]).max() == 0


@pytest.mark.parametrize(("window", "name", "tolerance"), [
    ("ram-lak", "ramp", 1e-6), ("shepp-logan", "shepp-logan", 1e-6), ("cosine", "cosine", 1e-6),
    # scikit-image samples these two windows as fftshift(np.hamming/np.hanning(n)), a hair off-centre
    ("hamming", "hamming", 3e-3), ("hann", "hann", 3e-3),
])  # fmt: skip
def test_fbp_matches_skimage_iradon(phantom, theta_deg, window, name, tolerance):
    sinogram = radon(phantom, theta_deg, circle=True)
    reference = iradon(sinogram, theta_deg, filter_name=name, circle=True)
    angles = view_angles(VIEWS, dtype=torch.float64)
    mine = fbp(torch.from_numpy(sinogram.T.copy())[None], angles, (SIZE, SIZE), window=window)[0].numpy()
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    inside = yy**2 + xx**2 <= (SIZE // 2) ** 2  # iradon blanks the rest
    assert _relative(mine[inside], reference[inside]) < tolerance
    assert set(WINDOWS) >= {window}


def _disk(shape, spacing, radius_mm, value=1.0):
    (height, width), (dy, dx) = shape, spacing
    y = (np.arange(height) - (height - 1) / 2)[:, None] * dy
    x = (np.arange(width) - (width - 1) / 2)[None, :] * dx
    return np.where(x**2 + y**2 <= radius_mm**2, value, 0.0)


def test_projection_of_a_disk_gives_its_chords_in_mm_on_anisotropic_pixels():
    # 0.5 mm rows, 0.8 mm columns: a projector that mixed the axes up would see an ellipse
    shape, spacing, radius = (121, 77), (0.5, 0.8), 24.0
    disk = _disk(shape, spacing, radius, value=0.02)  # 1/mm
    bins, bin_mm = detector_geometry(shape, spacing)
    sinogram = project(torch.from_numpy(disk)[None], view_angles(36, dtype=torch.float64), spacing)[0].numpy()
    t = (np.arange(bins) - (bins - 1) / 2) * bin_mm
    chords = 0.02 * 2 * np.sqrt(np.clip(radius**2 - t**2, 0, None))
    central = np.abs(t) < 0.8 * radius
    assert np.abs(sinogram[:, central] - chords[central]).max() < 0.03 * chords.max()
    assert np.abs(sinogram[:, np.abs(t) > radius + 2]).max() < 1e-9


def test_fbp_of_an_analytic_disk_sinogram_gives_the_attenuation_in_per_mm():
    shape, spacing, radius, mu = (80, 80), (0.7, 0.7), 20.0, 0.0193
    bins, bin_mm = detector_geometry(shape, spacing)
    t = (np.arange(bins) - (bins - 1) / 2) * bin_mm
    sinogram = np.tile(mu * 2 * np.sqrt(np.clip(radius**2 - t**2, 0, None)), (180, 1))
    image = fbp(torch.from_numpy(sinogram)[None], view_angles(180, dtype=torch.float64), shape, spacing, bin_mm)[0]
    truth = _disk(shape, spacing, radius, value=mu)
    inner = _disk(shape, spacing, radius - 3) > 0
    outer = _disk(shape, spacing, radius + 3) == 0
    assert abs(float(image.numpy()[inner].mean()) - mu) < 0.01 * mu
    assert np.abs(image.numpy()[inner] - truth[inner]).max() < 0.05 * mu
    assert np.abs(image.numpy()[outer]).max() < 0.05 * mu


def test_projector_and_fbp_are_differentiable():
    image = torch.rand(2, 17, 17, dtype=torch.float64, requires_grad=True)
    angles = view_angles(12, dtype=torch.float64)
    fbp(project(image, angles), angles, (17, 17)).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
