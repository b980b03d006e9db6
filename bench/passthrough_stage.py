"""A stage that keeps every document untouched: what the runner costs when a stage does no work."""
import pyarrow as pa

from pipeline.stage import Stage, StageConfig, split


class Passthrough(Stage):
    """Keeps every row; used by bench_runner.py to measure the runner's own overhead."""

    name = "passthrough"
    Config = StageConfig

    def process(self, batch: pa.Table):
        return split(batch, [None] * batch.num_rows)
