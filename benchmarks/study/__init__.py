"""The small real data study (`benchmarks/small_data_study.py`), split by what each part does.

    common      the study's config (the user's config plus the study's overrides) and its real slices,
                loaded by medgan's own dataset code
    prepare     gather real T1 MR volumes from registry packages and normalise them into a data folder
    runs        one `medgan train` per seed and one stock peer per stock seed, all at once; their summaries
    stock       the stock peer: MONAI's MedNIST DCGAN tutorial as published, trained and sampled
    scoring     the figures of one generated set against the real set, and the mode-collapse verdict
    evaluation  every trained generator (and the untrained one, the floor) scored seed by seed
    report      the figure PNG, the data summary and the printed table
    seen        `run --images`: split by subject, train every run to the largest count, a checkpoint at each
    seen_score  every checkpoint scored beside the held-out floor at the same sample sizes; the table
    seen_figure FD and recall against images seen, medgan against stock, as one PNG

The samples are drawn by `medgan.inference` (`load_generators`, `synthesize.draw`), the untrained
generator is built by `medgan.tasks.networks.build_task_networks`, and the metrics are
`medgan.metrics` functions: the study copies none of medgan's code.
"""
