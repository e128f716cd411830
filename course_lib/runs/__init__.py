"""Training drivers: worker functions that train a whole model under one kind of parallelism.

Each is launched from a notebook with named arguments, e.g.
``launch(train_data_parallel, 2, config=cfg, steps=8, batch_size=32)``, and returns what the
lecture compares with the single-process run. The concepts themselves (DDP, ZeRO, tensor and
pipeline parallel layers, compressors) live in their own files; these files only put them to work.
"""
