"""`RandLesiond`: procedural lesions as on-the-fly augmentation in MONAI `Compose` pipelines.

    from monai.transforms import Compose
    from medgan.lesions.transforms import RandLesiond
    augment = Compose([..., RandLesiond(keys=("image", "label"), organ_labels=(1,), lesion_label=2,
                                        model="ct-liver-hypo", prob=0.5), ...])

The image (`[1, i, j, k]`, physical units: apply it before intensity scaling) and its label map are
edited together: lesions go inside the organ labels, are painted into the label map with
`lesion_label`, and any mass effect moves image and labels alike. Voxel sizes come from the image's
affine (a MetaTensor) or `spacing_mm` (a plain tensor). Everything runs on the tensors' own device,
so a GPU batch stays on the GPU. The transform draws one seed per call from its MONAI random state
(`set_random_state`), so a seeded pipeline is reproducible; the lesions' records go into the
image's metadata as JSON (`meta["lesion_records"]`), which collates like any string.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from medgan.errors import InputError
from medgan.lesions.insert import simulate_lesions
from medgan.lesions.models import LESION_MODELS, LesionModel

__all__ = ["RandLesiond"]

logger = logging.getLogger(__name__)


class RandLesiond(Randomizable, MapTransform):
    """Insert procedural lesions into an image and its label map (a MONAI dictionary transform)."""

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),  # (image key, label-map key)
        organ_labels: Sequence[int] | None = None,  # label values lesions may go in; None: every nonzero label
        lesion_label: int = 1,  # the value lesions get in the label map
        prob: float = 1.0,  # chance that a sample gets lesions at all
        num_lesions: tuple[int, int] = (1, 3),  # lesions per sample, drawn uniformly (inclusive)
        model: str | LesionModel = "generic",  # a LESION_MODELS preset or a LesionModel
        diameter_mm: tuple[float, float] | None = None,  # overrides the preset's range (mm)
        contrast: tuple[float, float] | None = None,  # overrides the preset's range (its units)
        modality: str = "CT",  # picks HU or relative contrasts for presets without units
        margin_mm: float = 2.0,  # lesions stay this far inside the organ
        gap_mm: float = 2.0,  # lesions stay this far apart
        blur_sigma_mm: Sequence[float] | None = None,  # the scanner's blur (sd per axis, mm); None: estimated
        spacing_mm: Sequence[float] | None = None,  # voxel size for plain tensors (MetaTensors carry theirs)
        max_tries: int = 50,  # places tried per lesion
        skip_unplaceable: bool = True,  # a sample whose lesions do not fit is left as it is (else: raise)
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"RandLesiond takes keys=(image, label), got {self.keys}")
        self.image_key, self.label_key = self.keys
        self.organ_labels = None if organ_labels is None else [int(v) for v in organ_labels]
        self.lesion_label = int(lesion_label)
        self.prob = float(prob)
        self.num_lesions = (int(num_lesions[0]), int(num_lesions[1]))
        base = LESION_MODELS.build(model) if isinstance(model, str) else model
        self.model = base.with_ranges(diameter_mm=diameter_mm, contrast=contrast)
        self.modality = modality
        self.margin_mm, self.gap_mm, self.max_tries = float(margin_mm), float(gap_mm), int(max_tries)
        self.blur_sigma_mm = None if blur_sigma_mm is None else [float(v) for v in blur_sigma_mm]
        self.spacing_mm = None if spacing_mm is None else [float(v) for v in spacing_mm]
        self.skip_unplaceable = skip_unplaceable
        self._apply, self._seed, self._count = False, 0, 0

    def randomize(self, data: Any = None) -> None:
        self._apply = self.R.rand() < self.prob
        self._seed = int(self.R.randint(0, 2**31 - 1))
        self._count = int(self.R.randint(self.num_lesions[0], self.num_lesions[1] + 1))

    def _affine(self, image) -> np.ndarray:
        affine = getattr(image, "affine", None)
        if affine is not None and self.spacing_mm is None:
            return np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
        return np.diag([*(self.spacing_mm or [1.0, 1.0, 1.0]), 1.0])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._apply or self.image_key not in d or self.label_key not in d:
            return d
        image, label = d[self.image_key], d[self.label_key]
        if image.ndim != 4 or image.shape[0] != 1 or tuple(label.shape) != tuple(image.shape):
            raise ValueError(f"RandLesiond needs a [1, i, j, k] image and a label map of the same shape, got "
                             f"{tuple(image.shape)} and {tuple(label.shape)}")  # fmt: skip
        values = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label)
        values = values.to(image.device)
        if self.organ_labels is None:
            organ = values[0] > 0
        else:
            organ = torch.isin(values[0], torch.tensor(self.organ_labels, device=values.device, dtype=values.dtype))
        try:
            result = simulate_lesions(image, organ, affine=self._affine(image), modality=self.modality,
                                      n=self._count, model=self.model, seed=self._seed, margin_mm=self.margin_mm,
                                      gap_mm=self.gap_mm, max_tries=self.max_tries, segmentation=values[0],
                                      blur_sigma_mm=self.blur_sigma_mm, measure=False)  # fmt: skip
        except InputError as err:
            if not self.skip_unplaceable:
                raise
            logger.debug("RandLesiond left a sample unchanged: %s", err)
            return d
        pushed = result.segmentation.to(values.dtype)
        painted = torch.where(result.labels[0] > 0, torch.tensor(self.lesion_label, dtype=values.dtype,
                                                                 device=values.device), pushed)  # fmt: skip
        new_label = label.clone()
        (new_label.as_tensor() if hasattr(new_label, "as_tensor") else new_label)[0] = painted
        new_image = result.image
        if hasattr(new_image, "meta"):
            new_image.meta["lesion_records"] = json.dumps([r.to_dict() for r in result.records])
        d[self.image_key], d[self.label_key] = new_image, new_label
        return d
