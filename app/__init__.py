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
is set here, before anything in the service runs a tensor operation. It does not hold everywhere: on
an AMD EPYC it was measured to change nothing (a row's float32 product differs between 2- or 3-row
calls and larger ones). So the served module runs every matrix product on blocks of one fixed
number of rows (``app.inference.fixed_rows``): one shape, one code path, the same bits for a row
whatever it was batched with (measured on an AMD EPYC with MKL's AVX-512 and its AVX2 kernels,
strict mode or not). The registry checks each model at load, with its
workers' torch threads (``app.inference.batch_invariant``); a model whose float32 pass fails it is
tried with float64 products rounded to float32 (``app.inference.prepare_for_inference(exact=True)``),
and a model that fails both is served with weak ETags.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
