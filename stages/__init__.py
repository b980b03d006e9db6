"""Document stages: one module per stage, each implementing pipeline.stage.Stage."""
