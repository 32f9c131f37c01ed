"""The ``diffusers`` backend (the [diffusion] extra): real images from local weights.

``orchestrator serve --backend diffusers --model-dir DIR`` serves a diffusers pipeline
directory (:mod:`.backend`, :mod:`.pipelines`); :mod:`.schedulers` maps the seed's
scheduler ids (pure data: it imports without torch); :mod:`.tiny` builds a tiny random
pipeline in code, for tests and benches that must not fetch anything. Only
:mod:`.schedulers` imports without the extra.
"""
