"""The first screen of a set evaluation: the extractor-separation figure ranks degraded sets beyond a held-out
real set on every installed extractor, the verdict follows, and the nearest-neighbour panels point at the
training images a set of copies was copied from."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import scipy.ndimage
from _metrics_data import write_phantom_set

from medgan.metrics.evaluate import evaluate_sets
from medgan.metrics.features import installed_extractors
from medgan.metrics.summary import summarise

SHAPE = (64, 64)
DEGRADATIONS = {
    "blur": lambda x: scipy.ndimage.gaussian_filter(x, 1.5),  # sigma in pixels
    "noise": lambda x: x + np.random.default_rng(int(abs(x).sum()) % 2**32).normal(0.0, 100.0, x.shape),  # HU
    "shift": lambda x: x + 120.0,  # HU: a miscalibrated generator
}


@pytest.fixture(scope="module")
def phantom_sets(tmp_path_factory):
    """A real set, a held-out real set (other seeds: other 'patients'), and the held-out set degraded three ways."""
    root = tmp_path_factory.mktemp("separation")
    write_phantom_set(root / "real", range(0, 20), SHAPE)
    write_phantom_set(root / "heldout", range(100, 112), SHAPE)
    for name, transform in DEGRADATIONS.items():
        write_phantom_set(root / name, range(100, 112), SHAPE, transform=transform)
    return root


def _red_dots(page: str) -> dict[str, float]:
    """x of each extractor's red dot (real half against the generated set) in the separation figure."""
    figure = re.search(r'<svg class="separation".*?</svg>', page).group(0)
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', figure)
    dots = [float(x) for x in re.findall(r'<circle cx="([\d.]+)" cy="[\d.]+" r="5" fill="#d62728">', figure)]
    return dict(zip(labels, dots, strict=True))


def test_separation_ranks_blur_noise_and_shift_beyond_a_held_out_real_set_on_every_extractor(phantom_sets, tmp_path):
    runs = {}
    for name in ("heldout", *DEGRADATIONS):
        record = evaluate_sets(
            phantom_sets / "real", phantom_sets / name, tmp_path / name, metrics=["fd", "prdc"], nearest_k=3,
            progress=False,
        )  # fmt: skip
        runs[name] = (record, (tmp_path / name / "report.html").read_text())
    tags = installed_extractors()
    heldout, page = runs["heldout"]
    assert set(heldout["extractors"]) == set(tags)  # every installed extractor, side by side, by default
    for name in DEGRADATIONS:
        record, degraded_page = runs[name]
        for tag in tags:
            near, far = heldout["extractor_separation"][tag], record["extractor_separation"][tag]
            # measured: held-out random_cnn 0.85, efficientnet_lite0 1.11; the weakest gap is efficientnet_lite0 on
            # the shift (1.53) and random_cnn on the noise (1.69)
            assert far["ratio"] > 1.25 * near["ratio"], (name, tag, near, far)
            assert far["real_halves_fd"] == pytest.approx(near["real_halves_fd"])  # one real split for both
            assert _red_dots(degraded_page)[tag] > _red_dots(page)[tag], (name, tag)  # the figure shows it
        assert record["summary"]["verdict"] == "far", (name, record["summary"]["lines"])
        assert '<p class="verdict far">' in degraded_page
    assert heldout["summary"]["verdict"] == "near", heldout["summary"]["lines"]
    assert '<p class="verdict near">' in page
    # the verdict is read on the extractor that separates the generated set most, and the headline names it
    record = runs["blur"][0]
    best = max(tags, key=lambda t: record["extractor_separation"][t]["ratio"])
    assert record["summary"]["extractor"] == best and f"on {best}" in record["summary"]["headline"]


def test_the_verdict_is_far_when_precision_fails_even_with_fd_near_its_floor():
    results = {
        "fd_a_floor": {"generated": 1.2, "floor": 1.0, "ratio": 1.2, "better": "lower"},
        "precision_a_floor": {"generated": 0.05, "floor": 0.5, "ratio": 0.1, "better": "higher"},
        "recall_a_floor": {"generated": 0.6, "floor": 0.6, "ratio": 1.0, "better": "higher"},
    }
    floor = {"description": "two random halves", "real_samples": 50, "compared_samples": 50}
    summary = summarise(results, {}, {**floor, "generated_subsampled": False}, ["a"])
    assert summary["verdict"] == "far" and summary["failed"] == ["precision"]
    assert summary["headline"].startswith("The generated set is far from its real-vs-real floor on a: precision 0.10x")
    results["precision_a_floor"].update(generated=0.45, ratio=0.9)
    summary = summarise(results, {}, {**floor, "generated_subsampled": False}, ["a"])
    assert summary["verdict"] == "near" and summary["failed"] == [] and summary["fd_ratio"] == 1.2
    results["fd_a_floor"].update(generated=3.0, ratio=3.0)
    assert summarise(results, {}, None, ["a"])["failed"] == ["FD"]


# generated name -> the training image it copies; names and order unrelated, so an index mix-up shows
COPIES = {"c000.nii.gz": "s317.nii.gz", "c001.nii.gz": "s305.nii.gz", "c002.nii.gz": "s322.nii.gz"}


def test_nearest_neighbour_panels_point_at_the_training_images_a_set_of_copies_came_from(tmp_path):
    train = write_phantom_set(tmp_path / "train", range(300, 324), SHAPE)
    real = write_phantom_set(tmp_path / "real", range(0, 16), SHAPE)
    fake = write_phantom_set(tmp_path / "fake", range(500, 509), SHAPE)  # new images, no training image's copy
    for copy, source in COPIES.items():
        shutil.copy(train / source, fake / copy)
        shutil.copy(train / source.replace(".nii.gz", ".json"), fake / copy.replace(".nii.gz", ".json"))
    record = evaluate_sets(
        real, fake, tmp_path / "r", train=train, metrics=["fd", "memorization"], extractor="random_cnn",
        progress=False,
    )  # fmt: skip
    panels = record["nearest_training"]
    copied = [p for p in panels if p["fake"] in COPIES]
    assert [p["fake"] for p in panels[: len(COPIES)]] == [p["fake"] for p in copied]  # the flagged copies first
    assert {p["fake"] for p in copied} == set(COPIES)
    for p in copied:
        assert p["pixel_match"] == COPIES[p["fake"]] and p["feature_match"] == COPIES[p["fake"]], p
        assert p["flagged"] and p["ncc"] == pytest.approx(1.0, abs=1e-6)
    others = [p for p in panels if p["fake"] not in COPIES]
    assert others and not any(p["flagged"] for p in others)  # new images are shown too, unflagged
    page = (tmp_path / "r" / "report.html").read_text()
    lead = page[: page.index("<h2>Metrics</h2>")]  # the first screen, above the metric tables
    for copy, source in COPIES.items():
        panel = re.search(rf'<div class="panel small flagged" data-fake="{re.escape(copy)}"[^>]*>(.*?)</div>', lead)
        assert panel is not None, copy
        assert f'data-pixel-match="{source}"' in panel.group(0)
        images = re.findall(r'src="(data:image/png;base64,[^"]+)"', panel.group(1))
        assert len(images) == 2 and images[0] == images[1]  # the copy beside the very image it copies
    assert "Memorization: 3 of 12 generated samples flagged" in lead
