"""Evaluation: the image benchmark (``benchmark``: simulated thick slices from 1 mm volumes, reconstruction,
PSNR/SSIM tables) and the lesion benchmark's metrics (``lesions``). Driven by ``prettier-eval``; uses the SR core
and the training package's volume loading and patch sampler."""
