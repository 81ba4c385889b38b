"""Control: each lesion matches its request, measured from the returned image and label map with scipy
(never with medgan's own measuring code): equivalent diameter within 10% (or one voxel's equivalent
diameter), mean contrast to the surroundings within 10%, wholly inside the organ with the margin, no
two lesions touching, and voxels away from the lesions untouched."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgan.lesions.insert import replay_lesions, simulate_lesions
from medgan.lesions.models import LESION_MODELS
from medgan.lesions.record import record_from_dict
from medgan.lesions.textures import CONTENT_RENDERERS


def _spacing(image) -> tuple[float, ...]:
    return tuple(np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0))


def check_control(before, result, organ, spacing, margin_mm=2.0):
    """Assert the judged numbers for every lesion; returns the measured (diameter, contrast) pairs."""
    out = result.image.numpy()[0].astype(np.float64)
    original = before.numpy()[0].astype(np.float64)
    labels = result.labels.numpy()[0]
    organ = np.asarray(organ, bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    one_voxel_mm = (6 * voxel_ml * 1000 / math.pi) ** (1 / 3)
    unchanged = out == original
    inside_distance = ndimage.distance_transform_edt(organ, sampling=spacing)  # mm to the nearest non-organ voxel
    found = []
    assert sorted(np.unique(labels))[1:] == [r.label for r in result.records]
    for record in result.records:
        mask = labels == record.label
        diameter = (6 * mask.sum() * voxel_ml * 1000 / math.pi) ** (1 / 3)
        assert abs(diameter - record.shape.diameter_mm) <= max(0.1 * record.shape.diameter_mm, one_voxel_mm)
        assert organ[mask].all(), f"lesion {record.index} leaves the organ"
        assert inside_distance[mask].min() > margin_mm - 1e-6, f"lesion {record.index} is within the margin"
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        inner, outer = record.rendered["shell_mm"]
        shell = (distance > inner) & (distance <= outer) & organ & unchanged & (labels == 0)
        around = out[shell].mean()
        contrast = out[mask].mean() - around
        if record.intensity.units == "relative":
            contrast /= around
        assert abs(contrast - record.intensity.contrast) <= 0.1 * abs(record.intensity.contrast), (
            f"lesion {record.index}: contrast {contrast:.4g}, asked {record.intensity.contrast:.4g}"
        )
        others = (labels > 0) & ~mask
        assert not others[distance <= record.gap_mm].any(), f"lesion {record.index} touches another"
        found.append((diameter, contrast))
    changed = ~unchanged
    near = ndimage.distance_transform_edt(labels == 0, sampling=spacing) <= 15.0
    assert not (changed & ~near).any(), "voxels far from every lesion changed"
    return found


def test_liver_lesions_match_the_request(ct_body):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(8, 20))
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=3, model=model, seed=4)
    assert len(result.records) == 3
    assert result.image.dtype == image.dtype and torch.equal(torch.as_tensor(image.affine),
                                                             torch.as_tensor(result.image.affine))  # fmt: skip
    measured = check_control(image, result, liver[0].numpy(), _spacing(image))
    for record, (diameter, contrast) in zip(result.records, measured, strict=True):
        assert record.measured["equivalent_diameter_mm"] == pytest.approx(diameter, rel=1e-6)
        # the record measures its shell less the voxels any lesion changed, the test less those that differ
        assert record.measured["mean_contrast"] == pytest.approx(contrast, abs=0.1 * abs(contrast))


def test_lung_nodules_match_the_request(ct_body):
    image, tissues_map, tissues = ct_body
    lung = tissues_map[None] == tissues.index("lung")
    model = LESION_MODELS.build("ct-lung-nodule", diameter_mm=(4, 10))
    result = simulate_lesions(image, lung, affine=image.affine, modality="CT", n=4, model=model, seed=1)
    check_control(image, result, lung[0].numpy(), _spacing(image))


def test_brain_tumours_with_rim_core_halo_and_push(mr_brain):
    image, tissues_map, tissues = mr_brain
    white = tissues_map[None] == tissues.index("white_matter")
    model = LESION_MODELS.build("mr-brain-enhancing", diameter_mm=(16, 22), rim_probability=1.0, core_probability=1.0,
                                halo_probability=1.0, halo_mm=(3, 5), mass_effect_probability=1.0,
                                mass_effect=(0.8, 1.0))  # fmt: skip
    result = simulate_lesions(image, white, affine=image.affine, modality="MR", n=2, model=model, seed=2)
    for record in result.records:
        assert record.intensity.units == "relative"
        assert record.compartments.rim_mm > 0 and record.compartments.core_fraction > 0
        assert record.compartments.halo_mm > 0 and record.mass_effect is not None
    # the push moves tissue beyond the reach of the blur and halo (the shell) but not beyond its own reach
    changed = result.image.numpy()[0] != image.numpy()[0]
    labels = result.labels.numpy()[0]
    distance = ndimage.distance_transform_edt(labels == 0, sampling=_spacing(image))
    shell_inner = max(r.rendered["shell_mm"][0] for r in result.records)
    assert changed[distance > shell_inner].any()
    assert not changed[distance > max(r.mass_effect.reach_mm for r in result.records) + 1].any()
    # containment is judged against the organ as it now lies (pushed along with the image)
    check_control_pushed(image, result, result.organ.numpy())


def check_control_pushed(image, result, organ):
    """As check_control, but the push changes voxels out to its reach: no 'untouched far away' check."""
    spacing = _spacing(image)
    out = result.image.numpy()[0].astype(np.float64)
    labels = result.labels.numpy()[0]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for record in result.records:
        mask = labels == record.label
        diameter = (6 * mask.sum() * voxel_ml * 1000 / math.pi) ** (1 / 3)
        assert abs(diameter - record.shape.diameter_mm) <= 0.1 * record.shape.diameter_mm
        assert organ[mask].all()
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        inner, outer = record.rendered["shell_mm"]
        shell = (distance > inner) & (distance <= outer) & organ & (labels == 0)
        contrast = out[mask].mean() / out[shell].mean() - 1
        assert abs(contrast - record.intensity.contrast) <= 0.1 * abs(record.intensity.contrast)


def test_same_seed_same_image_and_replay_is_identical(ct_body):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(6, 16))
    first = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=model, seed=7)
    again = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=model, seed=7)
    other = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=model, seed=8)
    assert torch.equal(first.image, again.image) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.image, other.image)
    saved = json.loads(json.dumps([r.to_dict() for r in first.records]))
    replayed = replay_lesions(image, liver, [record_from_dict(r) for r in saved], affine=image.affine)
    assert torch.equal(first.image, replayed.image) and torch.equal(first.labels, replayed.labels)
    assert [r.to_dict() for r in replayed.records] == saved


def test_the_input_is_left_unchanged(ct_body):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    copy = image.clone()
    simulate_lesions(image, liver, affine=image.affine, modality="CT", n=1,
                     model=LESION_MODELS.build("generic", diameter_mm=(10, 10)), seed=0)  # fmt: skip
    assert torch.equal(image.as_tensor(), copy.as_tensor())


@pytest.mark.parametrize("preset", LESION_MODELS.names())
def test_every_preset_meets_its_request(preset, ct_body, mr_brain):
    """Each registered preset, in the organ and modality it is meant for (the generic one in the liver)."""
    if preset.startswith("mr-"):
        image, tissues_map, tissues = mr_brain
        organ, modality = tissues_map[None] == tissues.index("white_matter"), "MR"
    else:
        image, tissues_map, tissues = ct_body
        organ, modality = tissues_map[None] == tissues.index("lung" if "lung" in preset else "liver"), "CT"
    model = LESION_MODELS.build(preset, diameter_mm=(6, 12), mass_effect_probability=0.0)
    result = simulate_lesions(image, organ, affine=image.affine, modality=modality, n=2, model=model, seed=5)
    assert [r.preset for r in result.records] == [preset, preset]
    check_control(image, result, organ[0].numpy(), _spacing(image))


@pytest.mark.parametrize("renderer", CONTENT_RENDERERS.names())
def test_every_content_renderer_fills_the_shape(renderer, ct_body, request):
    """A content renderer changes the scan where the lesion is and leaves the far voxels alone."""
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    built = (
        CONTENT_RENDERERS.build(renderer)
        if renderer != "learned"
        else CONTENT_RENDERERS.build("learned", checkpoint=request.getfixturevalue("inpaint_checkpoint"))
    )  # the learned renderer paints with a checkpoint (a tiny one here)
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=1, renderer=built,
                              model=LESION_MODELS.build("generic", diameter_mm=(12, 12)), seed=0)  # fmt: skip
    mask = result.labels[0] > 0
    assert result.records[0].renderer == renderer
    assert not torch.equal(result.image[0][mask], image[0][mask])
    check_control(image, result, liver[0].numpy(), _spacing(image))


def test_generic_preset_on_mr_uses_relative_contrast(mr_brain):
    image, tissues_map, tissues = mr_brain
    white = tissues_map[None] == tissues.index("white_matter")
    model = LESION_MODELS.build("generic", diameter_mm=(8, 12))
    result = simulate_lesions(image, white, affine=image.affine, modality="MR", n=2, model=model, seed=0)
    for record in result.records:
        assert record.intensity.units == "relative" and -0.3 <= record.intensity.contrast <= -0.1
    check_control(image, result, white[0].numpy(), _spacing(image))
