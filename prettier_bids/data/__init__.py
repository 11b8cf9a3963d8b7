"""Package data: io spec, configs, split, model weights and cards."""
