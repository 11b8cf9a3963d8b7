"""Training: patch pairs from 1 mm volumes (``patches``), synthetic lesions (``lesions``), losses, the training
configuration (``config``), the training loop and its checkpoints (``train``), the hyper-parameter search
(``tune``). Driven by ``prettier-train``; uses the SR core (:mod:`prettier_bids.sr`) and nothing above it."""
