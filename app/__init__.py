"""ganserve's HTTP service: loads generator checkpoints and serves images over FastAPI."""
