"""Learned lesion content: an inpaint checkpoint paints inside the procedural shape, under the same control."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch
from test_lesion_control import _spacing, check_control

from medgan.errors import InputError
from medgan.io import write_image
from medgan.lesions.insert import replay_lesions, simulate_lesions
from medgan.lesions.learned import LearnedRenderer
from medgan.lesions.models import LESION_MODELS
from medgan.lesions.record import record_from_dict


def test_learned_lesions_match_the_request_and_name_their_checkpoint(ct_body, inpaint_checkpoint):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    renderer = LearnedRenderer(inpaint_checkpoint)
    assert renderer.context_mm == pytest.approx(64.0)  # half of 32 pixels of 4 mm
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(10, 18))
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=model, seed=5,
                              renderer=renderer)  # fmt: skip
    check_control(image, result, liver[0].numpy(), _spacing(image))  # size, contrast, containment, untouched
    with open(inpaint_checkpoint, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    for record in result.records:
        assert record.renderer == "learned"
        assert record.rendered["checkpoint"] == inpaint_checkpoint and record.rendered["checkpoint_sha256"] == digest
        assert record.rendered["checkpoint_step"] == 3
    saved = [record_from_dict(json.loads(json.dumps(r.to_dict()))) for r in result.records]
    again = replay_lesions(image, liver, saved, affine=image.affine)  # the renderer rebuilt from the records
    assert torch.equal(again.image, result.image) and torch.equal(again.labels, result.labels)


def test_a_learned_record_replays_only_with_the_same_checkpoint(ct_body, inpaint_checkpoint, tmp_path):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    copy = str(tmp_path / "copy.pt")
    shutil.copy(inpaint_checkpoint, copy)
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(10, 14))
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=1, model=model, seed=1,
                              renderer=LearnedRenderer(copy))  # fmt: skip
    state = torch.load(copy, weights_only=True)
    state["step"] = 4
    torch.save(state, copy)  # the same path now holds another checkpoint
    with pytest.raises(InputError, match="painted by another version of"):
        replay_lesions(image, liver, result.records, affine=image.affine)
    os.remove(copy)
    with pytest.raises(InputError, match="which is not there"):
        replay_lesions(image, liver, result.records, affine=image.affine)


def test_the_command_takes_an_inpaint_checkpoint_as_its_model(run_cli, ct_body, inpaint_checkpoint, tmp_path):
    image, tissues_map, tissues = ct_body
    write_image(image, tmp_path / "ct.nii.gz")
    from medgan.io.image import make_image

    write_image(make_image(tissues_map[None].numpy(), image.affine.numpy(), {}), tmp_path / "seg.nii.gz")
    args = [str(tmp_path / "ct.nii.gz"), "--organ-mask", str(tmp_path / "seg.nii.gz"), "--label",
            str(tissues.index("liver")), "--preset", "ct-liver-hypo", "--n", "1", "--diameter-mm", "10:14",
            "--model", inpaint_checkpoint, "--seed", "2"]  # fmt: skip
    status, _, err = run_cli("simulate-lesions", *args, "--out", str(tmp_path / "out"))
    assert status == 0, err
    saved = json.loads((tmp_path / "out" / "ct_lesion_records.json").read_text())
    assert saved["lesions"][0]["renderer"] == "learned" and saved["lesions"][0]["rendered"]["checkpoint"]


def _trained_on_lesions(ct_body, folder, contrast_hu: float) -> str:
    """An inpaint checkpoint trained from a labelled CSV (lesions of `contrast_hu` in the phantom's liver and their
    label map) with configs/lesion_inpaint_2d.yaml cut to CPU size: `data.crop: mask` samples cut around them."""
    from pathlib import Path

    from medgan.config import load_config
    from medgan.io.image import make_image
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.tasks.config import TrainConfig
    from medgan.training import train

    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(14, 20), contrast=(contrast_hu, contrast_hu))
    lesions = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=4, model=model, seed=3)
    folder.mkdir()
    write_image(lesions.image, folder / "ct.nii.gz")
    write_image(make_image(lesions.labels.numpy(), image.affine.numpy(), {}), folder / "lesions.nii.gz")
    (folder / "lesions.csv").write_text(f"image,mask\n{folder / 'ct.nii.gz'},{folder / 'lesions.nii.gz'}\n")
    overrides = [f"data.source={folder / 'lesions.csv'}", "data.image_size=[24,24]", "data.spacing_mm=[2.0,2.0]",
                 "data.window=[-300.0,300.0]", "data.num_workers=0", "generator.options={channels: 8, "
                 "max_channels: 16, depth: 2, residual: true}", "discriminator.options={channels: 8, num_layers: 1}",
                 "train.steps=40", "train.batch_size=4", "train.device=cpu", "train.precision=fp32",
                 "train.compile=false", "train.channels_last=false", "train.ema_halflife_images=0",
                 "train.log_every_steps=40", "train.sample_every_steps=40", "train.checkpoint_every_steps=40",
                 "train.tensorboard=false", "train.num_samples=2", "optim.g_lr=0.003", "optim.lr_decay_start=null",
                 "augment.p=0.0"]  # fmt: skip
    cfg = load_config(TrainConfig, str(Path(__file__).parents[2] / "configs" / "lesion_inpaint_2d.yaml"), overrides)
    assert cfg.data.crop == "mask"  # the GPU config's own cut, kept at CPU size
    return latest_checkpoint(train(cfg, run_dir=str(folder / "run")))


def test_a_model_trained_on_labelled_lesions_paints_their_contrast(ct_body, tmp_path):
    """Trained from a labelled CSV on bright lesions, the network paints bright lesions; on dark ones, dark ones
    (measured before the contrast is matched), and each insertion still meets the request and names its model."""
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    request = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(12, 16), contrast=(-30.0, -30.0))
    painted = {}
    for sign, name in ((1, "bright"), (-1, "dark")):
        checkpoint = _trained_on_lesions(ct_body, tmp_path / name, 120.0 * sign)
        result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=request, seed=7,
                                  renderer=LearnedRenderer(checkpoint))  # fmt: skip
        check_control(image, result, liver[0].numpy(), _spacing(image))
        assert all(r.rendered["checkpoint"] == checkpoint and r.rendered["checkpoint_step"] == 40
                   for r in result.records)  # fmt: skip
        painted[name] = [r.rendered["painted_contrast"] for r in result.records]
    # Both runs start from the same weights and see the same slices, the lesions' sign aside. Untrained, the residual
    # U-Net paints the hole's input, mid-window (0 HU: -60 to the liver); here bright gives about +17, dark -79.
    assert min(painted["bright"]) > 0.0 and max(painted["dark"]) < min(painted["bright"]) - 60.0, painted
