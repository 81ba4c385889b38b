"""`make demo`: medgan's main job on `sample_data/`, end to end on the CPU, printing where everything went.

    python -m medgan.demo [--data sample_data] [--out demo_output] [--steps 400]

1. describes every image in the sample data (what `medgan info` prints) and converts the
   sample DICOM series to NIfTI, keeping its geometry;
2. trains a tiny GAN on 32 x 32 axial slices of the sample CT (configs/debug_cpu_unconditional.yaml,
   about a minute on two cores): run folder with config, stats.jsonl, TensorBoard events,
   sample grids and checkpoints;
3. synthesizes scans from the checkpoint as NIfTI, as a DICOM series marked SyntheticData YES
   (read back to check spacing and HU) and as PNG previews.

Re-running replaces the previous outputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from medgan.errors import MedganError


def run_demo(data_dir: str, out_dir: str, steps: int = 400) -> list[tuple[str, str]]:
    """Run the steps above; returns (what, path) for every output written."""
    import pydicom

    from medgan.config import load_config
    from medgan.inference import synthesize
    from medgan.io import find_images, read_image, write_image
    from medgan.io.geometry import spacing_mm
    from medgan.io.summary import summarize
    from medgan.tasks.checkpoint import latest_checkpoint
    from medgan.training import TrainConfig, train

    os.makedirs(out_dir, exist_ok=True)
    outputs: list[tuple[str, str]] = []

    print(f"1. Images in {data_dir}:")
    found, _ = find_images(data_dir)
    for image in found:
        r = summarize(image)
        shape = "x".join(map(str, r["shape"]))
        spacing = " x ".join(f"{v:g}" for v in r["spacing_mm"])
        print(f"   {os.path.relpath(r['path'], data_dir):28s} {r['format']:6s} {r['modality'] or '-':3s} "
              f"{shape:>12s}  {spacing} mm  {r['orientation']}  range {r['range']}")  # fmt: skip
    ct = read_image(os.path.join(data_dir, "dicom", "ct_series"))
    nifti_path = write_image(ct, os.path.join(out_dir, "ct_series.nii.gz"), overwrite=True)
    print(f"   the DICOM series as NIfTI: {nifti_path}")
    outputs.append(("the sample DICOM series as NIfTI (HU)", nifti_path))

    print(f"2. Training a tiny GAN on 32 x 32 axial CT slices (8 mm voxels) for {steps} steps (CPU)")
    config_path = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "configs", "debug_cpu_unconditional.yaml")
    overrides = [f"data.source={os.path.join(data_dir, 'ct_body_3d.nii.gz')}", "data.image_size=[32,32]",
                 "data.spacing_mm=[8.0,8.0]", f"train.steps={steps}", f"train.log_every_steps={max(steps // 10, 1)}",
                 f"train.checkpoint_every_steps={steps}", f"train.sample_every_steps={max(steps // 2, 1)}"]  # fmt: skip
    cfg = load_config(TrainConfig, config_path if os.path.isfile(config_path) else None, overrides)
    run_dir = os.path.join(out_dir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    train(cfg, run_dir=run_dir)
    checkpoint = latest_checkpoint(run_dir)
    outputs.append(("the training run (config.yaml, stats.jsonl, TensorBoard events, samples/)", run_dir))
    outputs.append(("its checkpoint", checkpoint))

    print("3. Synthesizing scans: NIfTI, DICOM (SyntheticData YES) and PNG previews")
    for fmt in ("nifti", "dicom", "png"):
        folder = os.path.join(out_dir, f"synthetic_{fmt}")
        synthesize(checkpoint, count=4, out_dir=folder, format=fmt, seed=2026, overwrite=True)
        outputs.append((f"4 synthetic 32 x 32 CT slices as {fmt.upper() if fmt != 'nifti' else 'NIfTI'}", folder))
    series = os.path.join(out_dir, "synthetic_dicom", "synthetic_0000")
    back = read_image(series)
    marked = pydicom.dcmread(os.path.join(series, sorted(os.listdir(series))[0])).get("SyntheticData", "NO")
    spacing = " x ".join(f"{v:g}" for v in spacing_mm(back.affine.numpy())[:2])
    low, high = float(back.min()), float(back.max())
    print(f"   a synthetic DICOM read back: {spacing} mm voxels, {low:.0f} to {high:.0f} HU, SyntheticData {marked}")
    if marked != "YES":
        raise MedganError("the synthetic DICOM series is not marked SyntheticData YES; please report this")
    return outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medgan.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data", help="folder with medgan's sample data")
    parser.add_argument("--out", default="demo_output", help="where to write the outputs")
    parser.add_argument("--steps", type=int, default=400, help="training steps (400: about a minute on two cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        outputs = run_demo(args.data, args.out, args.steps)
    except MedganError as err:
        print(f"medgan demo: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"\nDone in {time.perf_counter() - start:.1f} s. Outputs:")
    for what, path in outputs:
        print(f"  {os.path.abspath(path)}   ({what})")


if __name__ == "__main__":
    main()
