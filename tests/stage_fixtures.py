"""Stages that break the contract on purpose, to show the runner catches it."""
import pyarrow as pa

from pipeline.stage import Stage, StageConfig, StageOutput


class LeakyStage(Stage):
    """Drops the last row without reporting it as removed."""

    name = "leaky"
    Config = StageConfig

    def process(self, batch: pa.Table) -> StageOutput:
        kept = batch.slice(0, max(batch.num_rows - 1, 0))
        return StageOutput(kept=kept, removed=batch.slice(0, 0).append_column("reason", pa.array([], pa.string())))
