"""Recording inside the training step: capture, recorder, backward pass, accumulators, layer selection."""
