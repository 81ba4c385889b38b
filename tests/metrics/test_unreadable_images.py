"""An unreadable image in a set is skipped (named, with the reason, in the warnings and in
metrics.json), not fatal; the run stops only when too few readable images remain."""

from __future__ import annotations

import json

from medgan.data.phantoms import PHANTOMS
from medgan.io import write_image


def write_set(folder, seeds, broken=()):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        write_image(
            PHANTOMS.build("ct_body", spatial_dims=2, seed=seed, shape=(64, 64)), folder / f"s{seed:03d}.nii.gz"
        )
        (folder / f"s{seed:03d}.json").write_text(json.dumps({"Modality": "CT"}))
    for name in broken:  # a copy cut short, as an interrupted transfer leaves it
        whole = (folder / f"s{seeds[0]:03d}.nii.gz").read_bytes()
        (folder / name).write_bytes(whole[: len(whole) // 2])
    return folder


def test_a_truncated_image_is_skipped_and_reported(tmp_path, run_cli):
    # "a_..." sorts first: the probe of the set's geometry must pass over it too
    real = write_set(tmp_path / "real", [0, 1, 2, 3], broken=["a_truncated.nii.gz", "m_truncated.nii.gz"])
    fake = write_set(tmp_path / "fake", [10, 11, 12])
    status, stdout, err = run_cli(
        "evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "r", "--metrics", "fd,intensity,diversity",
        "--no-progress", "--extractor", "random_cnn",
    )  # fmt: skip
    assert status == 0, err
    assert "fd_random_cnn" in stdout
    warning = next(line for line in err.splitlines() if "skipped" in line)
    assert warning.startswith("medgan: warning: real set: skipped 2 unreadable file(s): a_truncated.nii.gz: ")
    assert "m_truncated.nii.gz: not a readable NIfTI file" in warning
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    inputs = record["inputs"]["real"]
    assert inputs["count"] == 4 and inputs["shapes"] == {"64x64": 4}
    assert [s.split(":")[0] for s in inputs["skipped"]] == ["a_truncated.nii.gz", "m_truncated.nii.gz"]
    assert record["inputs"]["fake"]["skipped"] == []
    assert any("skipped 2 unreadable" in w for w in record["warnings"])


def test_too_few_readable_images_is_one_line(tmp_path, run_cli):
    real = write_set(tmp_path / "real", [0], broken=["b_truncated.nii.gz"])
    fake = write_set(tmp_path / "fake", [10, 11])
    status, _, err = run_cli(
        "evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "r", "--metrics", "fd", "--no-progress"
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert "fd needs at least 2 images per set; the real set has 1 readable (skipped 1, e.g. b_truncated.nii.gz" in err
    assert not (tmp_path / "r").exists()
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "x.nii.gz").write_bytes((real / "b_truncated.nii.gz").read_bytes())
    status, _, err = run_cli(
        "evaluate", "--real", real, "--fake", only_broken, "--out", tmp_path / "r", "--metrics", "intensity"
    )
    assert status == 2 and "none of the 1 images of the fake set is readable, e.g. x.nii.gz: not a readable" in err
