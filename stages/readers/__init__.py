"""Input readers of the source stage (``pipeline.readers``): one module per format, each defining ``READER``."""
