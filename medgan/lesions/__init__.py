"""Procedural lesion simulation: lesions of a chosen size, shape, contrast and place inside a patient's organ.

    from medgan.lesions.insert import simulate_lesions, replay_lesions
    result = simulate_lesions(ct, liver_mask, affine=ct.affine, modality="CT", n=3, model="ct-liver-hypo", seed=0)

Parameters are sampled into a `LesionRecord` (`record.py`, `models.py`), then rendered from it
deterministically: the shape with partial volume on the scan's own grid (`shapes.py`), placed inside
the organ (`placement.py`), pushed (`deform.py`) and filled by a content renderer (`textures.py`),
at the blur and noise measured in the scan (`measure.py`). `transforms.py` has the MONAI transform
`RandLesiond`. Submodules are imported on use, so importing `medgan.lesions` stays cheap.
"""
