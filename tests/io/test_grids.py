"""Grid arithmetic of `medgan.io.geometry`: the axis map on arrays and affines (every permutation and
flip, 48 in 3D and 8 in 2D), the grid comparison with its reasons and tolerance edges, single slices.

Expected arrays and affines come from nibabel's orientation functions (`apply_orientation`,
`inv_ornt_aff`), and world positions from the affines by hand, independently of medgan's code.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from external import rotation
from nibabel.orientations import apply_orientation, inv_ornt_aff

from medgan.io.geometry import (
    AxisMap,
    GridMismatch,
    axis_map_towards,
    compare_grids,
    describe_grid,
    full_affine,
    reorient_like,
    respaced_affine,
    spacing_mm,
)

SHAPE_3D, SHAPE_2D = (3, 4, 5), (3, 4)
# A generic grid: anisotropic voxels, turned about two axes, origin away from 0.
AFFINE = np.eye(4)
AFFINE[:3, :3] = rotation(0, 20) @ rotation(2, -35) @ np.diag([0.8, 0.6, 2.5])
AFFINE[:3, 3] = [-120.5, 33.25, 71.0]
# Dyadic numbers only: every product and sum of the map is exact, so round trips can be compared with ==.
DYADIC = np.array([[0, -0.5, 0, 40.25], [0.75, 0, 0, -30.5], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def every_map(dims: int) -> list[AxisMap]:
    return [AxisMap(p, s) for p in itertools.permutations(range(dims)) for s in itertools.product((1, -1), repeat=dims)]


MAPS_3D, MAPS_2D = every_map(3), every_map(2)


def test_there_are_48_maps_in_3d_and_8_in_2d():
    assert len(set(MAPS_3D)) == 48 and len(set(MAPS_2D)) == 8
    assert sum(m.is_identity for m in MAPS_3D) == 1


def nibabel_ornt(mapping: AxisMap) -> np.ndarray:
    """nibabel's orientation array for the map: input axis perm[a] goes to output axis a, flipped by sign."""
    ornt = np.zeros((len(mapping.perm), 2))
    for a, (b, s) in enumerate(zip(mapping.perm, mapping.signs, strict=True)):
        ornt[b] = [a, s]
    return ornt


def world(affine: np.ndarray, shape) -> np.ndarray:
    """RAS position of every voxel centre, [*shape, 3], in C order of the array."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, len(shape))
    homogeneous = np.c_[index, np.zeros((len(index), 3 - len(shape))), np.ones(len(index))]
    return (homogeneous @ affine.T)[:, :3]


@pytest.mark.parametrize("mapping", MAPS_3D, ids=str)
def test_every_3d_map_moves_arrays_and_affines_like_nibabel_and_keeps_every_voxel_in_place(mapping):
    values = np.arange(np.prod(SHAPE_3D), dtype=np.float32).reshape(SHAPE_3D)  # each value names its voxel
    moved = mapping.apply(values)
    moved_affine = mapping.apply_affine(AFFINE, SHAPE_3D)
    ornt = nibabel_ornt(mapping)
    assert np.array_equal(moved, apply_orientation(values, ornt))
    np.testing.assert_allclose(moved_affine, AFFINE @ inv_ornt_aff(ornt, SHAPE_3D), atol=1e-12)
    assert moved.shape == mapping.moved_shape(SHAPE_3D) and moved.flags.c_contiguous
    # The voxel holding value v sits at the same place in space before and after.
    before = world(AFFINE, SHAPE_3D)
    after = world(moved_affine, moved.shape)
    np.testing.assert_allclose(after, before[moved.ravel().astype(int)], atol=1e-9)
    # Channels first, torch: the same moves on every channel.
    stack = torch.from_numpy(np.stack([values, -values]))
    assert torch.equal(mapping.apply(stack), torch.from_numpy(np.stack([moved, -moved])))


@pytest.mark.parametrize("mapping", MAPS_3D, ids=str)
def test_every_3d_map_undone_by_its_inverse_is_exact(mapping):
    values = np.random.default_rng(0).normal(size=SHAPE_3D)
    back = mapping.inverse()
    assert np.array_equal(back.apply(mapping.apply(values)), values)
    moved_affine = mapping.apply_affine(DYADIC, SHAPE_3D)
    assert np.array_equal(back.apply_affine(moved_affine, mapping.moved_shape(SHAPE_3D)), DYADIC)
    assert back.inverse() == mapping


@pytest.mark.parametrize("mapping", MAPS_2D, ids=str)
def test_every_2d_map_on_4x4_and_3x3_affines(mapping):
    values = np.arange(12.0).reshape(SHAPE_2D)
    affine = full_affine(np.array([[0.5, 0, 10.0], [0, -0.75, 20.0], [0, 0, 1]]), 2)
    moved = mapping.apply(torch.from_numpy(values)[None])  # [C, i, j]
    moved_affine = mapping.apply_affine(affine, SHAPE_2D)
    ornt = nibabel_ornt(mapping)
    assert np.array_equal(moved[0].numpy(), apply_orientation(values, ornt))
    np.testing.assert_array_equal(moved_affine[:, 2], affine[:, 2])  # the plane's normal column is untouched
    before, after = world(affine, SHAPE_2D), world(moved_affine, moved.shape[1:])
    np.testing.assert_allclose(after, before[moved[0].numpy().ravel().astype(int)], atol=1e-12)
    small = np.array([[0.5, 0, 10.0], [0, -0.75, 20.0], [0, 0, 1]])  # a 2D reader's 3x3 affine
    np.testing.assert_allclose(mapping.apply_affine(small, SHAPE_2D), in_plane(moved_affine))
    back = mapping.inverse()
    assert np.array_equal(back.apply(moved)[0].numpy(), values)
    assert np.array_equal(back.apply_affine(moved_affine, moved.shape[1:]), affine)


def in_plane(full: np.ndarray) -> np.ndarray:
    """The 3x3 affine of a 2D image lying in the plane z = 0, from its 4x4 one."""
    return full[np.ix_([0, 1, 3], [0, 1, 3])]


@pytest.mark.parametrize("mapping", MAPS_3D, ids=str)
def test_compare_grids_finds_the_map_back_from_any_storage_order(mapping):
    values = np.arange(60.0).reshape(SHAPE_3D)
    stored, stored_affine = mapping.apply(values), mapping.apply_affine(AFFINE, SHAPE_3D)
    found = compare_grids(stored.shape, stored_affine, SHAPE_3D, AFFINE)
    assert found == mapping.inverse()
    assert np.array_equal(found.apply(stored), values)


@pytest.mark.parametrize("mapping", MAPS_2D, ids=str)
def test_compare_grids_of_2d_images_gives_a_2d_map(mapping):
    affine = full_affine(np.array([[0.5, 0, 10.0], [0, 0.5, 20.0], [0, 0, 1]]), 2)
    stored = mapping.apply_affine(affine, SHAPE_2D)
    stored[:3, 2] = 0.0  # a 2D image's affine without a slice column: the plane's normal stands in
    found = compare_grids(mapping.moved_shape(SHAPE_2D), stored, SHAPE_2D, affine)
    assert found == mapping.inverse()


def turned(q: np.ndarray, affine=AFFINE) -> np.ndarray:
    """`affine` with its axes turned by the 3x3 rotation `q`, written in the grid's own axes, about the first voxel."""
    step = np.linalg.norm(affine[:3, :3], axis=0)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] / step @ q * step
    return out


def reason(shape, affine, ref_shape=SHAPE_3D, ref_affine=AFFINE) -> str:
    try:
        compare_grids(shape, affine, ref_shape, ref_affine)
    except GridMismatch as err:
        return str(err)
    return "same grid"


def test_the_reasons_two_grids_differ():
    # turned so that the reference's axes j and k both run closest to one own axis
    assert reason(SHAPE_3D, turned(rotation(0, 40) @ rotation(2, 40))) == "the axes are not parallel"
    assert reason((3, 4, 6), AFFINE) == "the extents differ"
    assert reason((4, 3, 5), AFFINE) == "the extents differ"  # same voxel count, axes of other lengths
    doubled = AFFINE.copy()
    doubled[:3, :3] *= 2
    assert reason(SHAPE_3D, doubled) == "the spacing or direction differs"
    assert reason(SHAPE_3D, turned(rotation(2, 5))) == "the spacing or direction differs"
    shifted = AFFINE.copy()
    shifted[:3, 3] += AFFINE[:3, 0]  # one voxel along i
    assert reason(SHAPE_3D, shifted) == "the origins differ"
    assert reason(SHAPE_3D, AFFINE) == "same grid"


@pytest.mark.parametrize(("fraction", "same"), [(0.0009, True), (0.0011, False)])
def test_spacing_tolerance_is_a_tenth_of_a_percent(fraction, same):
    for axis in range(3):
        stretched = AFFINE.copy()
        stretched[:3, axis] *= 1 + fraction
        assert (reason(SHAPE_3D, stretched) == "same grid") is same
        if not same:
            assert reason(SHAPE_3D, stretched) == "the spacing or direction differs"


@pytest.mark.parametrize(("radians", "same"), [(0.0009, True), (0.0011, False)])
def test_direction_tolerance_is_a_thousandth_of_a_voxel_per_voxel(radians, same):
    tilted = turned(rotation(2, np.degrees(radians)))
    assert (reason(SHAPE_3D, tilted) == "same grid") is same
    if not same:
        assert reason(SHAPE_3D, tilted) == "the spacing or direction differs"


@pytest.mark.parametrize(("voxels", "same"), [(0.045, True), (0.055, False)])
def test_origin_tolerance_is_five_hundredths_of_the_smallest_in_plane_voxel(voxels, same):
    for axis in range(3):  # the smallest voxel is 0.6 mm, along j; moving along k (2.5 mm) counts the same
        moved = AFFINE.copy()
        moved[:3, 3] += AFFINE[:3, axis] / np.linalg.norm(AFFINE[:3, axis]) * voxels * 0.6
        assert reason(SHAPE_3D, moved) == ("same grid" if same else "the origins differ")


def test_a_single_slice_counts_its_plane_and_position_but_not_its_thickness():
    shape, thin = (3, 4, 1), np.diag([1.0, 1.0, 1.0, 1.0])
    thick = np.diag([1.0, 1.0, 5.0, 1.0])
    upside_down = np.diag([1.0, 1.0, -5.0, 1.0])  # the normal reversed: the same voxels
    assert reason(shape, thick, shape, thin) == "same grid"
    found = compare_grids(shape, upside_down, shape, thin)
    values = np.arange(12.0).reshape(shape)
    assert np.array_equal(found.apply(values), values)
    for radians, expected in ((0.0009, "same grid"), (0.0011, "the spacing or direction differs")):
        tilted = thick.copy()
        tilted[:3, 2] = 5.0 * np.array([np.sin(radians), 0.0, np.cos(radians)])
        assert reason(shape, tilted, shape, thin) == expected
    above = thick.copy()
    above[2, 3] = 0.5  # half a millimetre along the normal: another slice
    assert reason(shape, above, shape, thin) == "the origins differ"
    sliver, nudged = np.diag([1.0, 1.0, 0.1, 1.0]), np.diag([1.0, 1.0, 0.1, 1.0])
    nudged[0, 3] = 0.04  # 4% of an in-plane voxel: a slice thinner than its pixels does not tighten the tolerance
    assert reason(shape, nudged, shape, sliver) == "same grid"
    # A 2D image and its 4x4 affine from a reader that leaves the third column empty.
    flat = np.diag([1.0, 1.0, 0.0, 1.0])
    assert reason((3, 4), flat, (3, 4), np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])) == "same grid"


def test_a_2d_and_a_3d_grid_are_not_compared_by_accident():
    with pytest.raises(ValueError, match="2 or 3 axes"):
        compare_grids((3, 4), np.eye(4), (3, 4, 1), np.eye(4))


def test_reorient_like_brings_any_storage_order_back_to_the_wanted_directions():
    oblique = AFFINE  # not along patient axes: the nearest direction still decides
    values = torch.arange(60.0).reshape(1, *SHAPE_3D)
    directions = oblique[:3, :3] / np.linalg.norm(oblique[:3, :3], axis=0)
    for mapping in MAPS_3D:
        stored, stored_affine = mapping.apply(values), mapping.apply_affine(oblique, SHAPE_3D)
        assert axis_map_towards(stored_affine, directions, 3) == mapping.inverse()
        back, back_affine = reorient_like(stored, stored_affine, directions)
        assert torch.equal(back, values)
        np.testing.assert_allclose(back_affine, oblique, atol=1e-9)
    # Directions no reordering can match (two wanted axes along one array axis): left as it is.
    assert axis_map_towards(AFFINE, np.c_[AFFINE[:3, 0], AFFINE[:3, 0], AFFINE[:3, 2]], 3).is_identity


def test_full_affine_and_spacing():
    embedded = full_affine(np.array([[0.5, 0, 10.0], [0, -0.7, 20.0], [0, 0, 1]]), 2)
    np.testing.assert_array_equal(embedded[:3, 2], [0, 0, 1])  # the plane z = 0, as a 2D reader means it
    np.testing.assert_array_equal(embedded[:3, 3], [10.0, 20.0, 0.0])
    empty = np.eye(4)
    empty[:3, :2] = rotation(1, 30)[:, :2] * [2.0, 3.0]
    empty[:3, 2] = 0.0
    np.testing.assert_allclose(full_affine(empty, 2)[:3, 2], rotation(1, 30)[:, 2], atol=1e-12)  # the unit normal
    assert spacing_mm(empty, 2) == pytest.approx([2.0, 3.0]) and all(type(v) is float for v in spacing_mm(empty))
    with pytest.raises(ValueError, match="4x4"):
        full_affine(np.eye(5), 3)


def test_respaced_affine_keeps_the_field_of_view():
    shape, target = np.array([8, 6, 10]), np.array([1.6, 1.2, 1.25])  # 0.8, 0.6, 2.5 mm: halved or doubled
    new_shape = shape * np.asarray(spacing_mm(AFFINE)) / target
    new = respaced_affine(AFFINE, target)
    assert spacing_mm(new) == pytest.approx(target.tolist())
    for corner in itertools.product((0, 1), repeat=3):  # the outer faces of the first and last voxels
        old_edge = AFFINE @ [*(np.array(corner) * shape - 0.5), 1]
        new_edge = new @ [*(np.array(corner) * new_shape - 0.5), 1]
        np.testing.assert_allclose(new_edge, old_edge, atol=1e-9)


@pytest.mark.parametrize(("radians", "oblique"), [(0.0, False), (0.0009, False), (0.0011, True), (0.2, True)])
def test_describe_grid_says_oblique_beyond_the_direction_tolerance(radians, oblique):
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [40.0, 30.0, -20.0]
    affine[:3, :3] = rotation(2, np.degrees(radians)) @ affine[:3, :3]
    text = describe_grid((40, 36, 12), affine)
    assert text.startswith("40x36x12 voxels of 0.8x0.8x2.5 mm, LPS")
    assert text.endswith("first voxel at (40, 30, -20) mm")
    assert ("LPS oblique," in text) is oblique
    assert describe_grid((40, 36), affine).startswith("40x36 voxels of 0.8x0.8 mm, LP")
