"""Before/after montages of the degradation simulators on real scans, for docs/enhancement.md.

    python docs/make_degradation_figures.py            # writes docs/figures/degradations_{ct,mr}.png

The scans come from Debian packages fetched the way the test suite fetches them (`tests/external.py`,
cached under .cache/medgan-tests): the InVesalius head CT (invesalius-examples) and the Colin27 T1
(mricron-data). Nothing from them is stored in the repository but these small previews.
Each montage is a grid of tiles, left to right and top to bottom in the order the docs list.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import external  # noqa: E402  (the tests' helper for the Debian data)

from medgan.data.degradations import DEGRADATIONS  # noqa: E402
from medgan.io.png import to_uint8, write_png  # noqa: E402


def montage(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """uint8 tiles of one size on a dark grid."""
    height, width = tiles[0].shape
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap), 32, np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        canvas[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = tile
    return canvas


def degrade(kind: str, plane: np.ndarray, spacing, seed: int = 0, **params) -> np.ndarray:
    x = torch.from_numpy(plane.astype(np.float32))[None, None]
    return DEGRADATIONS.build(kind, **params)(x, spacing, seed)[0][0, 0].numpy()


def ct_figure(out: Path) -> None:
    """Row 1: axial slice (W400/L40) as scanned, at 50% and 10% dose, and the 10% dose noise alone (+-200 HU).
    Row 2: brain window (W80/L40) as scanned and at 50% dose; a coronal reformat, then with 6 mm slices."""
    volume, (slice_mm, row_mm, col_mm) = external.invesalius_head_ct()  # (slices, rows, columns), HU
    plane = volume[60].astype(np.float32)
    half = degrade("ct-lowdose", plane, (row_mm, col_mm), dose=0.5, slice_thickness_mm=slice_mm)
    tenth = degrade("ct-lowdose", plane, (row_mm, col_mm), dose=0.1, slice_thickness_mm=slice_mm)
    coronal = volume[:, 128, :].astype(np.float32)  # (slices, columns): head at the top
    thick = degrade("thick-slices", coronal, (slice_mm, col_mm), thickness_mm=6.0, axis=0, back_to_input_grid=True)
    stretch = round(slice_mm / col_mm * coronal.shape[0])  # show the coronal plane at its true aspect
    rows = np.linspace(0, coronal.shape[0] - 1, stretch).round().astype(int)
    pad = (256 - stretch) // 2

    def square(image: np.ndarray) -> np.ndarray:
        tile = np.full((256, 256), -1024.0, np.float32)
        tile[pad : pad + stretch] = image[rows][::-1]
        return tile

    tiles = [to_uint8(p, -160, 240) for p in (plane, half, tenth)]
    tiles.append(to_uint8(tenth - plane, -200, 200))
    tiles += [to_uint8(p, 0, 80) for p in (plane, half)]
    tiles += [to_uint8(square(p), -160, 240) for p in (coronal, thick)]
    write_png(montage(tiles, 4), out, overwrite=True)


def mr_figure(out: Path) -> None:
    """Row 1: Colin27 axial slice, 4x random undersampling, 4x equispaced, Rician noise at SNR 10.
    Row 2: Gibbs (30% of k-space kept), rigid motion (severity 1), bias field (a = 0.5), 3x downsampling."""
    t1, _ = external.colin27_t1()
    plane = t1[:, :, 90].astype(np.float32)[:, ::-1].T  # rows: anterior at the top; columns: right to left
    spacing = (1.0, 1.0)
    results = [
        plane,
        degrade("mr-undersample", plane, spacing, acceleration=4.0, readout_axis=1),
        degrade("mr-undersample", plane, spacing, acceleration=4.0, pattern="equispaced", readout_axis=1),
        degrade("mr-noise", plane, spacing, snr=10.0),
        degrade("mr-gibbs", plane, spacing, kept_fraction=0.3),
        degrade("mr-motion", plane, spacing, severity=1.0, readout_axis=1),
        degrade("mr-bias", plane, spacing, log_amplitude=0.5),
        degrade("downsample", plane, spacing, factor=3.0, back_to_input_grid=True),
    ]
    high = float(np.percentile(plane, 99.5))
    write_png(montage([to_uint8(r, 0, high) for r in results], 4), out, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the PNG files")
    args = parser.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    ct_figure(folder / "degradations_ct.png")
    mr_figure(folder / "degradations_mr.png")
    print(f"wrote {folder / 'degradations_ct.png'} and {folder / 'degradations_mr.png'}")


if __name__ == "__main__":
    main()
