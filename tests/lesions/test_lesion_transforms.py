"""RandLesiond in a MONAI Compose: image and labels edited together, reproducible by seed, on any device."""

from __future__ import annotations

import json

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRanged

from medgan.lesions.transforms import RandLesiond


def _sample(ct_body):
    image, tissues_map, tissues = ct_body
    label = MetaTensor(tissues_map[None].clone(), affine=image.affine)
    return {"image": image.clone(), "label": label}, tissues.index("liver")


def test_in_a_compose_pipeline(ct_body):
    data, liver = _sample(ct_body)
    lesion = 99
    augment = Compose([
        RandLesiond(keys=("image", "label"), organ_labels=(liver,), lesion_label=lesion, num_lesions=(2, 2),
                    model="ct-liver-hypo", diameter_mm=(6, 12)),
        ScaleIntensityRanged(keys="image", a_min=-200, a_max=300, b_min=0.0, b_max=1.0, clip=True),
    ])  # fmt: skip
    augment.set_random_state(seed=11)
    out = augment(data)
    labels = out["label"].as_tensor()[0]
    before = data["label"].as_tensor()[0]
    assert (labels == lesion).any()
    assert bool((before[labels == lesion] == liver).all())  # lesions only where the liver was
    assert torch.equal(labels[labels != lesion], before[labels != lesion])  # nothing else relabelled
    assert torch.allclose(torch.as_tensor(out["image"].affine), torch.as_tensor(data["image"].affine))
    records = json.loads(out["image"].meta["lesion_records"])
    assert len(records) == 2 and all(r["preset"] == "ct-liver-hypo" for r in records)
    assert float(out["image"].max()) <= 1.0  # the next transform saw the edited image
    again = Compose(augment.transforms)
    again.set_random_state(seed=11)
    assert torch.equal(again(_sample(ct_body)[0])["image"].as_tensor(), out["image"].as_tensor())


def test_probability_zero_leaves_the_sample_alone(ct_body):
    data, liver = _sample(ct_body)
    out = RandLesiond(organ_labels=(liver,), prob=0.0)(data)
    assert out["image"] is data["image"] and out["label"] is data["label"]


def test_plain_tensors_with_a_spacing_and_unplaceable_samples(ct_body):
    data, liver = _sample(ct_body)
    image, label = data["image"].as_tensor(), data["label"].as_tensor()
    transform = RandLesiond(organ_labels=(liver,), lesion_label=5, num_lesions=(1, 1), diameter_mm=(8, 8),
                            spacing_mm=(2.0, 2.0, 3.0), blur_sigma_mm=(1.0, 1.0, 1.0))  # fmt: skip
    transform.set_random_state(seed=0)
    out = transform({"image": image, "label": label})
    assert isinstance(out["image"], torch.Tensor) and (out["label"] == 5).any()
    too_big = RandLesiond(organ_labels=(liver,), diameter_mm=(300, 300), blur_sigma_mm=(1.0, 1.0, 1.0))
    same = too_big({"image": image, "label": label})
    assert same["image"] is image
    with pytest.raises(Exception, match="do not fit"):
        RandLesiond(organ_labels=(liver,), diameter_mm=(300, 300), skip_unplaceable=False)(
            {"image": image, "label": label}
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_tensors_stay_on_the_gpu(ct_body):
    data, liver = _sample(ct_body)
    gpu = {key: value.to("cuda") for key, value in data.items()}
    transform = RandLesiond(organ_labels=(liver,), num_lesions=(2, 2), model="ct-liver-hypo", diameter_mm=(6, 12))
    transform.set_random_state(seed=3)
    out = transform(gpu)
    assert out["image"].device.type == "cuda" and out["label"].device.type == "cuda"
    assert (out["label"].as_tensor() != gpu["label"].as_tensor()).any()
    changed = out["label"].as_tensor()[0] != gpu["label"].as_tensor()[0]
    assert bool((gpu["label"].as_tensor()[0][changed] == liver).all())  # lesions land in the liver
    records = json.loads(out["image"].meta["lesion_records"])
    assert len(records) == 2
