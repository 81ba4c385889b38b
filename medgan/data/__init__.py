"""Data for training and testing: datasets, transforms, degradations and procedural phantoms.

Phantoms (`medgan.data.phantoms`): deterministic CT-like and MR-like images in physical units,
2D or 3D, built by name from the `PHANTOMS` registry or from a `PhantomConfig`:

    from medgan.data.phantoms import PHANTOMS
    ct = PHANTOMS.build("ct_body", spatial_dims=2, seed=3)   # MetaTensor [1, 128, 128], int16 HU

Submodules are imported on use, so importing `medgan.data` stays cheap.
"""
