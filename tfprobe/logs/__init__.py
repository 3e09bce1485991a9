"""The log files: TFRecord framing, the window writer, and the readers."""
