"""Evaluation: paired image metrics, distribution metrics on features, memorization, reports.

    image.py          PSNR, SSIM, MS-SSIM, MAE, RMSE, NRMSE (pure functions, explicit data_range)
    distribution.py   Fréchet distance, KID, precision/recall/density/coverage, MS-SSIM diversity,
                      1-D Wasserstein distance of intensities
    extractor.py      the built-in feature networks (random CNN, EfficientNet-Lite0) and their input handling
    features.py       the extractor registry, batching, 2.5D; extractor_files.py: user TorchScript/export files
    memorization.py   nearest training sample of each generated one, against held-out real images
    set_metrics.py    the set metrics of `medgan evaluate` (registry SET_METRICS)
    sets.py, collect.py, evaluate.py, pairs.py, grid.py, report.py, graphics.py: `medgan evaluate`

Import the submodules directly; this package imports nothing heavy on its own.
"""
