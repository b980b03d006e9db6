"""The plug-ins that transform documents: the source stage (``ingest``) with its input readers
(``stages.readers``), and the document stages, one module (or package) per stage, each implementing
``pipeline.stage.Stage`` and listed in ``pipeline.registry``. See docs/architecture.md."""
