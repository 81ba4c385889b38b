"""Insert simulated lesions into a scan: sample each lesion's record, place it, render it; or replay records.

    from medgan.lesions.insert import simulate_lesions, replay_lesions
    result = simulate_lesions(ct[0], liver, affine=ct.affine, modality="CT", n=3, model="ct-liver-hypo", seed=0)
    result.image, result.labels, result.records           # edited voxels, label map (lesion i = label i), records
    again = replay_lesions(ct[0], liver, result.records, affine=ct.affine)   # the identical image

Each lesion works on a box of voxels around it (the lesion, its blur, the shell its surroundings are
measured in, its push), so its cost does not grow with the scan. The scan's blur is estimated once
(from edges near the organ's border); the noise around each lesion where it is placed. Lesion i is
drawn from `numpy.random.default_rng([seed, i])`, so lesion 3 of a seed is the same whether 3 or 10
were asked for (as long as the first two landed where they did).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medgan.errors import InputError
from medgan.lesions import learned  # noqa: F401  (registers the learned renderer)
from medgan.lesions.deform import push_sources, warp
from medgan.lesions.grid import Box, box_dilate, dilate, gaussian_kernel, voxel_offsets_mm
from medgan.lesions.measure import estimate_blur, estimate_noise, lesion_contrast, measure_lesion
from medgan.lesions.models import LESION_MODELS, LesionModel, equal_volume_min_radius, sample_parameters, units_for
from medgan.lesions.placement import OrganMap, clear, fits, organ_map, pick_centre
from medgan.lesions.record import LesionRecord, ScanParams
from medgan.lesions.shapes import LesionShape, extent_mm, inscribed_mm, render_shape
from medgan.lesions.textures import CONTENT_RENDERERS, ContentRenderer, LesionCrop, blur_sd_mm, surround_shell_mm

__all__ = ["LesionResult", "replay_lesions", "simulate_lesions"]

_NOISE_RADII_MM = (15.0, 30.0, 60.0)  # noise is measured in organ voxels this close, widening until enough
_BLUR_BLOCKS = 8  # blocks on the organ's border that the scan's blur is estimated in
_BLUR_BLOCK_MM = 40.0  # their size, at most _BLUR_BLOCK_VOXELS voxels along each axis
_BLUR_BLOCK_VOXELS = 48


@dataclass
class LesionResult:
    image: Tensor  # the edited scan: the input's type, shape and dtype
    labels: Tensor  # int16 label map on the image's grid: lesion i has label i (0 elsewhere)
    records: list[LesionRecord]
    organ: Tensor  # the organ mask after any mass effect (bool, 3D)
    segmentation: Tensor | None  # the segmentation passed in, after any mass effect


class _Scene:
    """The scan being edited and the bookkeeping of its lesions (all on the image's device)."""

    def __init__(self, image: Tensor, organ: Tensor, affine, segmentation: Tensor | None):
        self.output = image.clone()
        self.voxels = _spatial(self.output)
        if self.voxels.ndim != 3:
            raise InputError(f"lesions go into 3D scans; this image has shape {tuple(image.shape)}")
        self.organ = _spatial(organ).to(device=self.voxels.device, dtype=torch.bool)  # copied before a push
        if self.organ.shape != self.voxels.shape:
            raise InputError(f"the organ mask's shape {tuple(self.organ.shape)} is not the image's "
                             f"{tuple(self.voxels.shape)}")  # fmt: skip
        self.segmentation = None if segmentation is None else _spatial(segmentation).clone().to(self.voxels.device)
        self.affine = np.asarray(affine if affine is not None else np.eye(4), dtype=np.float64)
        self.linear = torch.as_tensor(self.affine[:3, :3], dtype=torch.float32, device=self.voxels.device)
        self.spacing = tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        self.labels = torch.zeros(self.voxels.shape, dtype=torch.int16, device=self.voxels.device)
        self.changes: list[tuple[Box, Tensor]] = []  # each lesion's box and the voxels of it that it changed
        self.boxes: list[tuple[LesionRecord, Box]] = []
        self._map: OrganMap | None = None
        self._own_organ = False

    def occupied(self, box: Box) -> Tensor:
        """The voxels of `box.outer` that earlier lesions changed."""
        out = torch.zeros([s.stop - s.start for s in box.outer], dtype=torch.bool, device=self.voxels.device)
        for other, changed in self.changes:
            lo = [max(a.start, b.start) for a, b in zip(box.outer, other.outer, strict=True)]
            hi = [min(a.stop, b.stop) for a, b in zip(box.outer, other.outer, strict=True)]
            if any(h <= low for low, h in zip(lo, hi, strict=True)):
                continue
            mine = tuple(slice(low - a.start, h - a.start) for low, h, a in zip(lo, hi, box.outer, strict=True))
            theirs = tuple(slice(low - o.start + i.start, h - o.start + i.start)
                           for low, h, o, i in zip(lo, hi, other.outer, other.inner, strict=True))  # fmt: skip
            out[mine] |= changed[theirs]
        return out

    @property
    def map(self) -> OrganMap:
        if self._map is None:
            self._map = organ_map(self.organ, self.spacing)
        return self._map

    def box_half(self, record: LesionRecord, context_mm: float = 0.0) -> tuple[int, int, int]:
        """Half the box a lesion is rendered in (voxels per axis): its reach, or more `context_mm` around it
        for a renderer that reads the anatomy around the lesion (a learned one)."""
        extent = extent_mm(record.shape)
        reach = extent + max(surround_shell_mm(record, self.spacing)[1], record.margin_mm, context_mm) + record.gap_mm
        if record.mass_effect is not None:
            reach = max(reach, record.mass_effect.reach_mm + record.gap_mm)
        return tuple(math.ceil(reach / h) + 1 for h in self.spacing)

    def changed(self, record: LesionRecord, shape: LesionShape) -> Tensor:
        """Every voxel of the box the lesion changes: its partial volume and halo spread by the (truncated) blur
        kernel, and the ball its push reaches."""
        sigma = blur_sd_mm(record)
        radius = [gaussian_kernel(s / h, "cpu").numel() // 2 for s, h in zip(sigma, self.spacing, strict=True)]
        changed = box_dilate((shape.occupancy > 0) | (shape.halo > 0), radius)
        if record.mass_effect is not None:
            subvoxel = torch.tensor(record.shape.subvoxel, device=self.linear.device)
            offsets = voxel_offsets_mm(shape.half, self.linear, subvoxel)
            changed |= torch.linalg.vector_norm(offsets, dim=-1) <= record.mass_effect.reach_mm
        return changed

    def insert(self, record: LesionRecord, shape: LesionShape, renderer) -> None:
        box = Box(tuple(record.voxel), shape.half, tuple(self.voxels.shape))
        outer, inner = box.outer, box.inner
        crop = self.voxels[outer].float()
        organ = self.organ[outer]
        if record.mass_effect is not None:
            crop, organ = self._push(record, box, crop, organ)
        part = shape.cropped(inner)
        inside = torch.ones_like(organ)
        around = organ & ~self.occupied(box)  # other lesions are no part of this one's surroundings
        edited, info = renderer.render(LesionCrop(crop, around, inside, part, self.spacing), record)
        self.voxels[outer] = _cast_like(edited, self.voxels)
        label = torch.tensor(record.label, dtype=torch.int16, device=edited.device)
        self.labels[outer] = torch.where(part.mask, label, self.labels[outer])
        self.changes.append((box, self.changed(record, shape)))
        self.boxes.append((record, box))
        centre = np.asarray(record.voxel, float) + np.asarray(record.shape.subvoxel, float)
        record.centre_voxel = centre.tolist()
        record.centre_mm = (self.affine[:3, :3] @ centre + self.affine[:3, 3]).tolist()
        record.rendered = info

    def measure_all(self) -> None:
        """Measure every lesion in the finished scan (so later lesions are accounted for)."""
        for record, box in self.boxes:
            outer = box.outer
            mask = self.labels[outer] == record.label
            around = self.organ[outer] & ~self.occupied(box)
            record.measured = self._measure(record, mask, self.voxels[outer].float(), around,
                                            record.rendered["shell_mm"])  # fmt: skip

    def _push(self, record: LesionRecord, box: Box, crop: Tensor, organ: Tensor):
        push = record.mass_effect
        offsets = voxel_offsets_mm(
            box.half, self.linear, torch.tensor(record.shape.subvoxel, device=self.linear.device)
        )[box.inner]
        inverse = torch.linalg.inv(self.linear.double()).float()
        shift, moved = push_sources(offsets, inverse, push.strength, record.shape.diameter_mm / 2, push.reach_mm)
        crop = warp(crop, shift, moved)
        organ = warp(organ.to(torch.uint8), shift, moved, labels=True).bool()
        if not self._own_organ:  # the caller's mask is never written to
            self.organ, self._own_organ = self.organ.clone(), True
        self.organ[box.outer] = organ
        if self.segmentation is not None:
            self.segmentation[box.outer] = warp(self.segmentation[box.outer], shift, moved, labels=True)
        self._map = None  # the organ moved: its coarse cells are stale
        return crop, organ

    def _measure(self, record, mask, edited, organ, shell_mm) -> dict:
        measured = measure_lesion(mask, self.affine[:3, :3])
        inside, around = lesion_contrast(edited, mask, organ, self.spacing, shell_mm)
        contrast = inside - around
        if record.intensity.units == "relative":
            contrast = contrast / around
        measured.update({"lesion_mean": inside, "surroundings_mean": around, "mean_contrast": contrast,
                         "contrast_units": record.intensity.units})  # fmt: skip
        return measured


def _spatial(tensor: Tensor) -> Tensor:
    """The 3D voxels of `[1, i, j, k]` or `[i, j, k]` (a view; MetaTensor metadata stripped)."""
    data = tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)
    return data[0] if data.ndim == 4 and data.shape[0] == 1 else data


def _cast_like(values: Tensor, like: Tensor) -> Tensor:
    if like.is_floating_point():
        return values.to(like.dtype)
    info = torch.iinfo(like.dtype)
    return values.round().clamp(info.min, info.max).to(like.dtype)


def _resolve_model(model: str | LesionModel | None) -> LesionModel:
    if model is None:
        return LESION_MODELS.build("generic")
    return LESION_MODELS.build(model) if isinstance(model, str) else model


def scan_blur(scene: _Scene) -> ScanParams:
    """The scanner's blur, from blocks on the organ's border (where edges are); noise is filled in per lesion."""
    cells = scene.map
    border = (cells.touches & ~_eroded_once(cells.touches)).nonzero()
    if len(border) == 0:
        border = cells.touches.nonzero()
    picks = border[torch.linspace(0, len(border) - 1, min(_BLUR_BLOCKS, len(border))).round().long()]
    half = [min(_BLUR_BLOCK_VOXELS // 2, max(8, math.ceil(_BLUR_BLOCK_MM / 2 / h))) for h in scene.spacing]
    estimates, edges = [], np.zeros(3, int)
    for cell in picks.tolist():
        centre = [c * k + k // 2 for c, k in zip(cell, cells.cell, strict=True)]
        box = Box(tuple(centre), tuple(half), tuple(scene.voxels.shape))
        found = estimate_blur(scene.voxels[box.outer], scene.spacing)
        estimates.append([s if e else np.nan for s, e in zip(found.sigma_mm, found.edges, strict=True)])
        edges += np.asarray(found.edges)
    table = np.asarray(estimates, float)
    default = [0.5 * h for h in scene.spacing]
    sigma = [float(np.nanmedian(table[:, a])) if edges[a] else default[a] for a in range(3)]
    return ScanParams(noise_sd=0.0, noise_corr_mm=[0.0, 0.0, 0.0], blur_sigma_mm=sigma,
                      blur_edges=[int(e) for e in edges])  # fmt: skip


def _eroded_once(grid: Tensor) -> Tensor:
    return -F.max_pool3d(-(grid[None, None].float()), 3, stride=1, padding=1)[0, 0] > 0.5


def _local_noise(scene: _Scene, voxel: Sequence[int], fallback: ScanParams) -> tuple[float, list[float]]:
    for radius in _NOISE_RADII_MM:
        half = tuple(max(2, math.ceil(radius / h)) for h in scene.spacing)
        box = Box(tuple(voxel), half, tuple(scene.voxels.shape))
        region = scene.organ[box.outer] & ~scene.occupied(box)
        found = estimate_noise(scene.voxels[box.outer], region, scene.spacing)
        if found is not None:
            return found.sd, list(found.corr_mm)
    return fallback.noise_sd, list(fallback.noise_corr_mm)


def simulate_lesions(
    image: Tensor,  # [1, i, j, k] or [i, j, k], physical units; left unchanged
    organ: Tensor,  # same grid, nonzero inside the organ
    affine=None,  # 4x4 RAS affine (mm); identity when None
    modality: str = "",  # "CT" makes a preset without units use HU; anything else: relative contrasts
    n: int = 1,  # lesions to insert
    model: str | LesionModel | None = None,  # a LESION_MODELS name or a LesionModel (default: "generic")
    seed: int = 0,
    margin_mm: float = 2.0,  # every lesion voxel at least this far inside the organ's border
    gap_mm: float = 2.0,  # lesions' footprints (what they change and measure) at least this far apart
    max_tries: int = 200,  # places tried per lesion before giving up
    renderer: str | ContentRenderer = "procedural",  # a CONTENT_RENDERERS name, or a built one (LearnedRenderer)
    segmentation: Tensor | None = None,  # a label map to move along with any mass effect
    blur_sigma_mm: Sequence[float] | None = None,  # the scanner's blur (sd per axis); None: estimated
    measure: bool = True,  # measure each lesion in the output (volume, diameters, contrast)
) -> LesionResult:
    """Sample, place and render `n` lesions (see the module docstring); raises InputError when they cannot fit."""
    model = _resolve_model(model)
    scene = _Scene(image, organ, affine, segmentation)
    if not bool(scene.map.touches.any()):
        raise InputError("the organ mask is empty")
    units = units_for(model, modality)
    deepest = scene.map.deepest_mm()
    need = equal_volume_min_radius(model.diameter_mm[1], model.axis_ratio[0]) * 0.5 + margin_mm
    if need > deepest:
        raise InputError(f"lesions up to {model.diameter_mm[1]:g} mm across do not fit in the organ: its thickest "
                         f"part is under {2 * deepest:.0f} mm across, and lesions keep {margin_mm:g} mm inside "
                         "its border; ask for smaller lesions or a smaller margin")  # fmt: skip
    scan = scan_blur(scene) if blur_sigma_mm is None else ScanParams(0.0, [0.0] * 3, [float(v) for v in blur_sigma_mm])
    content = CONTENT_RENDERERS.build(renderer) if isinstance(renderer, str) else renderer
    context_mm = float(getattr(content, "context_mm", 0.0))
    records = []
    for index in range(1, n + 1):
        rng = np.random.default_rng([int(seed), index])
        shape, compartments, intensity, mass = sample_parameters(model, rng, units)
        measured_scan = ScanParams(0.0, [0.0] * 3, list(scan.blur_sigma_mm), list(scan.blur_edges))
        record = LesionRecord(index=index, label=index, seed=int(seed), lesion_seed=int(rng.integers(2**62)),
                              preset=model.name,
                              renderer=content.name, voxel=[0, 0, 0], shape=shape, compartments=compartments,
                              intensity=intensity, scan=measured_scan, mass_effect=mass, margin_mm=float(margin_mm),
                              gap_mm=float(gap_mm))  # fmt: skip
        rendered = render_shape(shape, compartments, scene.linear, scene.box_half(record, context_mm))
        record.voxel = _place(scene, record, rendered, rng, max_tries, n)
        record.scan.noise_sd, record.scan.noise_corr_mm = _local_noise(scene, record.voxel, scan)
        scene.insert(record, rendered, content)
        records.append(record)
    if measure:
        scene.measure_all()
    return _result(image, scene, records)


def _place(scene: _Scene, record: LesionRecord, shape: LesionShape, rng, max_tries: int, n: int) -> list[int]:
    grown_half, grown = _centred(dilate(shape.mask, record.margin_mm, scene.spacing), shape.half)
    foot_half, footprint = _centred(dilate(scene.changed(record, shape), record.gap_mm, scene.spacing), shape.half)
    # Cells that could hold a ball of the lesion's whole extent first (most places there fit), then any cell
    # that could hold its inscribed ball (the only places left for a lesion that just fits).
    likely = scene.map.candidates(extent_mm(record.shape) + record.margin_mm)
    possible = scene.map.candidates(inscribed_mm(record.shape) + record.margin_mm)
    for attempt in range(max_tries if len(possible) else 0):
        cells = likely if attempt < max_tries // 2 and len(likely) else possible
        voxel = pick_centre(scene.map, cells, rng)
        if voxel is None:
            continue
        inner = Box(voxel, grown_half, tuple(scene.voxels.shape))
        outer = Box(voxel, foot_half, tuple(scene.voxels.shape))
        if fits(inner, grown, scene.organ) and clear(outer, footprint, scene.occupied(outer)):
            return list(voxel)
    raise InputError(f"lesion {record.index} of {n} ({record.shape.diameter_mm:.1f} mm) does not fit: no place tried "
                     f"keeps it {record.margin_mm:g} mm inside the organ and {record.gap_mm:g} mm from the other "
                     "lesions; ask for fewer or smaller lesions, or a smaller margin or gap")  # fmt: skip


def _centred(mask: Tensor, half: Sequence[int]) -> tuple[tuple[int, int, int], Tensor]:
    """The smallest box about the centre voxel that holds `mask` (box-shaped, centred): its half-size and the
    mask cut to it."""
    where = mask.nonzero()
    if len(where) == 0:
        return (0, 0, 0), mask[tuple(slice(h, h + 1) for h in half)]
    reach = (where - torch.tensor(list(half), device=where.device)).abs().amax(0).tolist()
    part = tuple(slice(h - r, h + r + 1) for h, r in zip(half, reach, strict=True))
    return tuple(int(r) for r in reach), mask[part]


def replay_lesions(
    image: Tensor,
    organ: Tensor,
    records: Sequence[LesionRecord],
    affine=None,
    segmentation: Tensor | None = None,
    measure: bool = True,
    renderers: dict[str, ContentRenderer] | None = None,  # built renderers by name (a LearnedRenderer)
) -> LesionResult:
    """Render saved records again, in order: the same image, labels and measurements as when they were made.
    Records of the learned renderer rebuild it from the checkpoint they name (its SHA-256 checked) unless
    `renderers` holds it."""
    scene = _Scene(image, organ, affine, segmentation)
    built = dict(renderers or {})
    out = []
    for record in records:
        if any(not 0 <= v < s for v, s in zip(record.voxel, scene.voxels.shape, strict=True)):
            raise InputError(f"lesion {record.index} lies at voxel {record.voxel}, outside this image of shape "
                             f"{tuple(scene.voxels.shape)}: the record belongs to another scan")  # fmt: skip
        if record.renderer not in built:
            built[record.renderer] = _renderer_of(record)
        content = built[record.renderer]
        context_mm = float(getattr(content, "context_mm", 0.0))
        rendered = render_shape(record.shape, record.compartments, scene.linear, scene.box_half(record, context_mm))
        scene.insert(record, rendered, content)
        out.append(record)
    if measure:
        scene.measure_all()
    return _result(image, scene, out)


def _renderer_of(record: LesionRecord) -> ContentRenderer:
    """The renderer a saved record names: procedural ones by name, a learned one from its checkpoint."""
    if record.renderer != "learned":
        return CONTENT_RENDERERS.build(record.renderer)
    path, digest = record.rendered.get("checkpoint"), record.rendered.get("checkpoint_sha256")
    if not path or not os.path.isfile(path):
        raise InputError(f"lesion {record.index} was painted by the inpaint checkpoint {path}, which is not there; "
                         "replay where the checkpoint is")  # fmt: skip
    content = CONTENT_RENDERERS.build("learned", checkpoint=path)
    if digest and content.sha256 != digest:
        raise InputError(f"lesion {record.index} was painted by another version of {path} (SHA-256 "
                         f"{digest[:12]}..., now {content.sha256[:12]}...)")  # fmt: skip
    return content


def _result(image: Tensor, scene: _Scene, records: list[LesionRecord]) -> LesionResult:
    labels = scene.labels[None] if image.ndim == 4 else scene.labels
    return LesionResult(scene.output, labels, records, scene.organ, scene.segmentation)
