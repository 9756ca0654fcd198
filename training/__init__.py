"""ganserve's offline half: datasets, model families, the training loop and checkpoint I/O.

Importing this package is cheap: submodules are imported where they are used, so the
service can import ``training.checkpoint`` and ``training.latent`` without pulling in
the training loop, datasets or metrics.
"""
