"""ganserve's HTTP service: loads generator checkpoints and serves images over FastAPI.

Importing the package puts Intel MKL (torch's CPU matrix products) in strict conditional
numerical reproducibility mode, ``MKL_CBWR=AUTO,STRICT``, unless the environment already says
otherwise. The service promises that a seeded image has the same bytes however its request was
batched with others (strong ETags, ``immutable``, permalinks equal to ``/generate``). With its
AVX2 kernels (what MKL runs on AVX2-only CPUs: many AMD servers, older Intel ones) MKL's default
matrix product gives a row a result that depends on the number of rows, so a latent's image made
alone and made in a batch of 37 can differ by a rounding step in a few pixels; in strict mode
every row is computed the same way (tests/app/test_batch_invariance.py forces MKL to AVX2 with
``MKL_ENABLE_INSTRUCTIONS=AVX2`` and shows both). MKL reads the setting at its first call, so it
is set here, before anything in the service runs a tensor operation. Whatever the hardware, the
registry also checks each model at load (``app.forward.batch_invariant``). Strict mode holds on
Intel CPUs; on an AMD EPYC it was measured to change nothing, and there a model whose float32 pass
fails the check is served with float64 matrix products rounded to float32
(``app.batcher.prepare_for_inference(exact=True)``), which pass it; a model that fails both is
served with weak ETags.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
