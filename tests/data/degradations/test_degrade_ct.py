"""Low-dose CT physics: noise scaling with dose, FBP noise texture, HU preserved, geometry handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.data.degradations import DEGRADATIONS
from medgan.errors import ConfigError

SIZE, PIXEL_MM, RADIUS_MM = 64, 1.0, 28.0


def water_cylinder(size=SIZE, pixel=PIXEL_MM, radius=RADIUS_MM, batch=4) -> torch.Tensor:
    """Water (0 HU) in air (-1000 HU), [batch, 1, size, size]."""
    centre = (np.arange(size) - (size - 1) / 2) * pixel
    inside = centre[:, None] ** 2 + centre[None, :] ** 2 <= radius**2
    return torch.from_numpy(np.where(inside, 0.0, -1000.0)).float()[None, None].repeat(batch, 1, 1, 1)


def lowdose(x, dose, seed=0, **params):
    degradation = DEGRADATIONS.build("ct-lowdose", dose=dose, views=90, **params)
    return degradation(x, spacing_mm=(PIXEL_MM,) * (x.ndim - 2), generator=seed)[0]


def test_noise_sd_scales_as_one_over_sqrt_dose_and_the_mean_stays_at_0_hu():
    x = water_cylinder()
    centre = slice(SIZE // 2 - 10, SIZE // 2 + 10)
    sd, mean = {}, {}
    for dose in (1.0, 0.25, 0.1):
        noise = (lowdose(x, dose) - x)[:, 0, centre, centre]
        sd[dose], mean[dose] = float(noise.std()), float(noise.mean())
    for dose in (0.25, 0.1):
        assert sd[dose] / sd[1.0] == pytest.approx(1 / np.sqrt(dose), rel=0.10)
    assert all(abs(m) < 5.0 for m in mean.values()), mean
    assert 2.0 < sd[1.0] < 20.0  # a plausible full-dose level for 1 mm pixels through 56 mm of water


def radial_nps(noise: np.ndarray) -> np.ndarray:
    """Radially averaged noise power spectrum of square ROIs [n, s, s], by integer frequency radius."""
    rois = noise - noise.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fftshift(np.fft.fft2(rois), axes=(1, 2))) ** 2).mean(axis=0)
    size = power.shape[0]
    fy, fx = np.mgrid[:size, :size] - size // 2
    radius = np.hypot(fx, fy).round().astype(int)
    return np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())


def _falls_towards_zero_frequency(nps: np.ndarray) -> bool:
    low, middle = nps[1:3].mean(), nps[6:12].mean()
    return bool(low < 0.5 * middle and nps[1] < nps[3] < nps[6])


def test_noise_power_spectrum_falls_towards_zero_frequency_unlike_white_noise():
    x = water_cylinder(size=96, radius=44.0)
    noise = (lowdose(x, 0.25) - x)[:, 0, 24:72, 24:72].numpy()
    assert _falls_towards_zero_frequency(radial_nps(noise))
    white = np.random.default_rng(0).normal(size=noise.shape)  # the check itself tells the two apart
    assert not _falls_towards_zero_frequency(radial_nps(white))


def test_air_padding_integer_dtype_and_input_left_alone():
    x = water_cylinder(batch=1)
    x[..., :4, :] = -3024.0  # a scanner's outside-the-field padding
    hu = x.to(torch.int16)
    before = hu.clone()
    y = lowdose(hu, 0.5)
    assert y.dtype == torch.int16 and torch.equal(hu, before)
    assert torch.equal(y[..., :4, :], hu[..., :4, :])
    assert (y[..., 20:40, 20:40] != hu[..., 20:40, 20:40]).any()


def test_3d_volumes_are_reconstructed_plane_by_plane_across_the_slice_axis():
    volume = water_cylinder(size=32, radius=12.0, batch=1)[:, :, :, :, None].repeat(1, 1, 1, 1, 3)  # [1,1,32,32,3]
    degradation = DEGRADATIONS.build("ct-lowdose", dose=0.3, views=48)
    records = degradation.sample(1, 5, spacing_mm=(1.0, 1.0, 2.0))
    last = degradation.apply(volume, records, (1.0, 1.0, 2.0))
    moved = volume.permute(0, 1, 4, 2, 3)  # slices first: the same planes, same order
    first = degradation.apply(moved, [{**records[0], "slice_axis": 0}], (2.0, 1.0, 1.0))
    assert torch.equal(first.permute(0, 1, 3, 4, 2), last)
    noise = (last - volume)[0, 0, 8:24, 8:24]
    per_slice = [float(noise[..., k].std()) for k in range(3)]
    assert max(per_slice) < 1.3 * min(per_slice)
    correlation = np.corrcoef(noise[..., 0].flatten().numpy(), noise[..., 1].flatten().numpy())[0, 1]
    assert abs(correlation) < 0.2  # planes get independent noise


def test_bfloat16_input_gives_bfloat16_close_to_float32():
    x = water_cylinder(batch=1)
    degradation = DEGRADATIONS.build("ct-lowdose", dose=0.5, views=60)
    records = degradation.sample(1, 0, spacing_mm=(1.0, 1.0))
    exact = degradation.apply(x, records, (1.0, 1.0))
    half = degradation.apply(x.to(torch.bfloat16), records, (1.0, 1.0))
    assert half.dtype == torch.bfloat16
    assert (half.float() - exact).abs().max() <= 0.01 * exact.abs().max() + 1.0


def test_more_electronic_noise_and_smoother_windows_change_the_noise_as_expected():
    x = water_cylinder(batch=2)
    centre = (slice(None), 0, slice(22, 42), slice(22, 42))
    base = float((lowdose(x, 0.2) - x)[centre].std())
    electronic = float((lowdose(x, 0.2, electronic_noise_sd=300.0) - x)[centre].std())
    hann = float((lowdose(x, 0.2, filter="hann") - x)[centre].std())
    assert electronic > 1.2 * base
    assert hann < 0.8 * base


@pytest.mark.parametrize(("params", "words"), [
    ({"dose": 1.5}, ["dose", "1.5", "[0.001, 1]"]),
    ({"dose": 0.0}, ["dose", "0.0", "[0.001, 1]"]),
    ({"views": 8}, ["views", "8", "[16, 4096]"]),
    ({"filter": "butterworth"}, ["filter", "butterworth", "ram-lak"]),
    ({"dose": (0.5, 0.1)}, ["dose", "low above high"]),
])  # fmt: skip
def test_parameters_out_of_range_fail_with_one_line_naming_them(params, words):
    with pytest.raises(ConfigError) as info:
        DEGRADATIONS.build("ct-lowdose", **params)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_coarse_projection_for_the_expected_counts_gives_the_same_noise_level():
    centre = (np.arange(96) - 47.5) ** 2
    radius2 = centre[:, None] + centre[None, :]
    image = np.where(radius2 <= 44**2, 0.0, -1000.0)
    image[(radius2 > 40**2) & (radius2 <= 44**2)] = 1500.0  # a bone ring: sharp edges in the sinogram
    x = torch.from_numpy(image).float()[None, None].repeat(4, 1, 1, 1)
    sd = {}
    for coarsening in (1, 2):
        degradation = DEGRADATIONS.build("ct-lowdose", dose=0.25, views=120, projection_coarsening=coarsening)
        sd[coarsening] = float((degradation(x, (1.0, 1.0), generator=0)[0] - x)[:, 0, 30:66, 30:66].std())
    assert sd[2] == pytest.approx(sd[1], rel=0.06)


def test_thicker_slices_collect_more_quanta_so_noise_falls_as_one_over_sqrt_thickness():
    planes = water_cylinder(batch=1)[:, :, :, :, None].repeat(1, 1, 1, 1, 6)  # six 1 mm x 1 mm planes
    sd = {}
    for thickness in (1.0, 4.0):
        degradation = DEGRADATIONS.build("ct-lowdose", dose=0.5, views=90)
        records = degradation.sample(1, 0, spacing_mm=(1.0, 1.0, thickness))
        assert records[0]["slice_thickness_mm"] == thickness  # from the spacing across the slices
        y = degradation.apply(planes, records, (1.0, 1.0, thickness))
        sd[thickness] = float((y - planes)[0, 0, 22:42, 22:42].std())
    assert sd[4.0] / sd[1.0] == pytest.approx(0.5, rel=0.10)
    two_d = DEGRADATIONS.build("ct-lowdose").sample(1, 0, spacing_mm=(1.0, 1.0))[0]
    assert two_d["slice_thickness_mm"] == 1.0


def test_noise_does_not_depend_on_how_planes_are_chunked(monkeypatch):
    from medgan.data.degradations import ct

    volume = water_cylinder(size=24, radius=10.0, batch=2)[:, :, :, :, None].repeat(1, 1, 1, 1, 5)
    degradation = DEGRADATIONS.build("ct-lowdose", dose=0.3, views=24)
    records = degradation.sample(2, 9, spacing_mm=(1.0, 1.0, 1.0))
    whole = degradation.apply(volume, records, (1.0, 1.0, 1.0))
    monkeypatch.setattr(ct, "PLANES_AT_ONCE", 3)
    assert torch.equal(degradation.apply(volume, records, (1.0, 1.0, 1.0)), whole)
    assert not torch.equal(whole[..., 0], whole[..., 1])  # every plane has its own noise


def test_a_single_slice_volume_is_reconstructed_in_its_plane():
    from medgan.data.degradations import degrade_image
    from medgan.io.image import make_image

    plane = water_cylinder(size=40, radius=16.0, batch=1)[0].numpy().astype(np.int16)[..., None]  # [1, 40, 40, 1]
    image = make_image(plane, np.diag([0.7, 0.7, 0.7, 1.0]), {"modality": "CT"})  # isotropic: only the size tells
    out, record = degrade_image(image, "ct-lowdose", dose=0.2, views=32)
    assert record["slice_axis"] == 2 and out.shape == image.shape and out.dtype == torch.int16
    assert float((out.float() - image.float())[0, 12:28, 12:28].std()) > 1.0


def test_noise_level_agrees_with_an_independent_scikit_image_pipeline():
    from skimage.transform import iradon, radon

    x = water_cylinder(size=65, radius=28.0, batch=6)
    image = x[0, 0].double().numpy()
    views, dose, flux = 90, 0.25, 1e5 * 0.25 * (1000 / 90)  # 1 mm bins and slices: ct-lowdose's normalisation
    theta = np.arange(views) * 180.0 / views
    sinogram = radon(np.clip(0.0193 * (1 + image / 1000), 0, None), theta, circle=False)
    rng = np.random.default_rng(0)
    peer = []
    for _ in range(6):
        counts = rng.poisson(flux * np.exp(-sinogram)).clip(1, None)
        noise = iradon(np.log(flux / counts) - sinogram, theta, output_size=65, filter_name="shepp-logan", circle=False)
        peer.append(noise[22:43, 22:43] * 1000 / 0.0193)
    degradation = DEGRADATIONS.build(
        "ct-lowdose", dose=dose, views=views, electronic_noise_sd=0.0, projection_coarsening=1, filter="shepp-logan"
    )
    ours = (degradation(x, (1.0, 1.0), generator=0)[0] - x)[:, 0, 22:43, 22:43].numpy()
    assert float(ours.std()) == pytest.approx(float(np.std(peer)), rel=0.08)


def test_input_with_its_own_noise_gets_only_the_extra_noise_of_the_lower_dose():
    x = water_cylinder(batch=12)
    centre = (slice(None), 0, slice(22, 42), slice(22, 42))

    def sd(dose, **params):
        return float((lowdose(x, dose, electronic_noise_sd=0.0, **params) - x)[centre].std())

    assert sd(1.0, input_has_noise=True) == 0.0  # full dose on a full-dose scan: nothing to add
    # full-dose noise already there (variance f^2) plus the extra makes the quarter dose's 4 f^2
    assert sd(0.25, input_has_noise=True) == pytest.approx(np.sqrt(3.0) * sd(1.0), rel=0.08)
