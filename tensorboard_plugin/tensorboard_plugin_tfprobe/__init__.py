"""The tfprobe TensorBoard plugin (the "tfprobe" tab)."""
