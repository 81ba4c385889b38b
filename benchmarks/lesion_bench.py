"""How fast lesions go in: the command on CPU, `RandLesiond` on CPU and (when there is one) on a GPU.

    python benchmarks/lesion_bench.py                 # real chest CT (pyradiomics lung1), stretched to 512x512x300
    python benchmarks/lesion_bench.py --json out.json --repeats 5

Figures, each a median over `--repeats` runs:
  insert       lesions into the 512 x 512 x 300 CT with `simulate_lesions` (in memory: blur estimation,
               placement, rendering, measurement; no file I/O), ct-lung-nodule, 4..30 mm: one call with
               one lesion, one with four, and from the two what each further lesion adds
  command      `medgan simulate-lesions` on that CT as a NIfTI file, --n 3, end to end in a fresh process
               (start-up, reading, writing included): lesions per second
  transform    `RandLesiond` on 128 x 128 x 48 CT samples (medgan's ct_body phantom, 2 x 2 x 3 mm), 1..3 liver
               lesions each, blur given (as a training pipeline sets it once): samples and lesions per second,
               on CPU and on CUDA when available (CUDA timed with synchronisation)

The stretched CT is the real lung1 scan (512 x 512 x 48 at 0.57 x 0.57 x 5 mm) resampled linearly to 300
slices of 0.8 mm; its lungs (< -400 HU inside the body, `lungs_of` in lesion_realism.py) are the organ.
`--threads` sets torch's CPU threads (default 1: on a shared machine several threads contend).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def log(message: str) -> None:
    print(f"[lesion_bench] {message}", file=sys.stderr, flush=True)


def big_ct():
    """(MetaTensor [1, 512, 512, 300] int16 HU, lung mask [512, 512, 300]) from pyradiomics lung1."""
    from benchmarks.lesion_realism import lungs_of
    from benchmarks.registry_data import pyradiomics_case
    from medgan.io import read_image
    from medgan.io.image import make_image

    image_path, _ = pyradiomics_case("lung1")
    ct = read_image(image_path)
    volume = ct.as_tensor().float()[None]
    stretched = F.interpolate(volume, size=(512, 512, 300), mode="trilinear", align_corners=True)[0]
    affine = np.asarray(ct.affine, float).copy()
    affine[:3, 2] *= (ct.shape[3] - 1) / 299
    hu = stretched.round().to(torch.int16).numpy()
    return make_image(hu, affine, {"modality": "CT", "units": "HU"}), lungs_of(hu[0])


def time_insert(ct, lungs, repeats: int) -> dict:
    """One call with one lesion, and one with four: the per-scan cost (copying the scan, the organ's coarse
    cells, the blur estimate) and what each further lesion adds."""
    from medgan.lesions.insert import simulate_lesions
    from medgan.lesions.models import LESION_MODELS

    model = LESION_MODELS.build("ct-lung-nodule")
    organ = torch.from_numpy(lungs).to(ct.device)
    affine = np.asarray(ct.affine.cpu())
    simulate_lesions(ct, organ, affine=affine, modality="CT", n=1, model=model, seed=99)  # warm-up
    ones, fours = [], []
    for seed in range(repeats):
        for n, into in ((1, ones), (4, fours)):
            start = time.perf_counter()
            simulate_lesions(ct, organ, affine=affine, modality="CT", n=n, model=model, seed=seed)
            if ct.device.type == "cuda":
                torch.cuda.synchronize()
            into.append(time.perf_counter() - start)
    one, four = statistics.median(ones), statistics.median(fours)
    return {"seconds_one_lesion": one, "seconds_four_lesions": four, "seconds_per_further_lesion": (four - one) / 3,
            "runs_one": ones, "runs_four": fours}  # fmt: skip


def time_command(ct, lungs, repeats: int) -> dict:
    from medgan.io import write_image
    from medgan.io.image import make_image

    with tempfile.TemporaryDirectory() as work:
        write_image(ct, os.path.join(work, "ct.nii.gz"))
        write_image(
            make_image(lungs[None].astype(np.uint8), np.asarray(ct.affine), {}), os.path.join(work, "lungs.nii.gz")
        )
        times = []
        for seed in range(repeats):
            out = os.path.join(work, f"out{seed}")
            command = [sys.executable, "-m", "medgan", "simulate-lesions", os.path.join(work, "ct.nii.gz"),
                       "--organ-mask", os.path.join(work, "lungs.nii.gz"), "--preset", "ct-lung-nodule", "--n", "3",
                       "--seed", str(seed), "--out", out]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds_for_3": seconds, "lesions_per_s": 3 / seconds, "runs": times}


def time_transform(device: str, repeats: int) -> dict:
    from monai.data import MetaTensor

    from medgan.data.phantoms import PHANTOMS, phantom_labels
    from medgan.lesions.transforms import RandLesiond

    samples = []
    for seed in range(4):
        image = PHANTOMS.build("ct_body", seed=seed)
        labels, tissues = phantom_labels(image.meta["phantom_params"])
        label = MetaTensor(torch.from_numpy(labels[None].astype(np.int16)), affine=image.affine)
        samples.append({"image": image.to(device), "label": label.to(device)})
    liver = tissues.index("liver")
    transform = RandLesiond(organ_labels=(liver,), lesion_label=liver + 100, num_lesions=(1, 3), model="ct-liver-hypo",
                            diameter_mm=(5, 20), blur_sigma_mm=(1.0, 1.0, 1.5))  # fmt: skip
    transform.set_random_state(seed=0)
    transform(samples[0])  # warm-up (kernels, caches)
    count, lesions, start = 0, 0, time.perf_counter()
    for _ in range(repeats):
        for sample in samples:
            out = transform(sample)
            lesions += len(json.loads(out["image"].meta.get("lesion_records", "[]")))
            count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"samples_per_s": count / seconds, "lesions_per_s": lesions / seconds, "samples": count, "lesions": lesions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--skip-command", action="store_true", help="leave out the end-to-end command timing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the command gets the same)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    figures = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}  # fmt: skip
    log("building the 512 x 512 x 300 CT")
    ct, lungs = big_ct()
    figures["insert_cpu"] = time_insert(ct, lungs, args.repeats)
    log(
        f"insert: {figures['insert_cpu']['seconds_one_lesion']:.3f} s for one lesion, "
        f"{figures['insert_cpu']['seconds_per_further_lesion']:.3f} s per further lesion"
    )
    if not args.skip_command:
        figures["command_cpu"] = time_command(ct, lungs, args.repeats)
        log(f"command: {figures['command_cpu']['lesions_per_s']:.2f} lesions/s")
    figures["transform_cpu"] = time_transform("cpu", args.repeats)
    log(f"RandLesiond CPU: {figures['transform_cpu']['samples_per_s']:.2f} samples/s")
    if torch.cuda.is_available():
        ct_gpu = ct.to("cuda")
        figures["insert_cuda"] = time_insert(ct_gpu, lungs, args.repeats)
        figures["transform_cuda"] = time_transform("cuda", args.repeats)
        log(f"RandLesiond CUDA: {figures['transform_cuda']['samples_per_s']:.2f} samples/s")
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
