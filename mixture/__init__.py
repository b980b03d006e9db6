"""The mixture builder: composition table, phase sampling and packed training shards.

Contract (what ``pipeline.steps`` and the CLI use)::

    from mixture import MixtureConfig, run_mixture

    MixtureConfig(**(config.mixture or {}))     # validates the run config's `mixture:` section
    result = run_mixture(config, executor, log=print, force=False)
    result["composition"]   # tokens, share, documents, bytes per category and per language
    result["phases"]        # per phase and category: target vs realised weight and tokens, epochs
    result["manifest"]      # the training shards: per phase, per shard sequences and tokens

It reads the kept/ shards of ``input_stage`` (dedup by default) and the tokenizer in
``<work_dir>/tokenizer``, runs one task per shard on ``executor`` and writes ``<work_dir>/mixture/``:

- ``tokens/<shard>.parquet``: every document's token ids (a long one in pieces) and exact counts (step 1,
  ``mixture.count``)
- ``composition.{md,csv,json,svg}``: the report's Table 1 for this corpus, by category and language
- ``plan.json``: which sampling bins each phase takes per category and language (``mixture.phases``)
- ``shards/<phase>/part-NNNNN.parquet``: rows of ``seq_len + 1`` token ids, documents separated by the
  end-of-document id, shuffled across shards (dealt by ``mixture.packing``, packed by ``mixture.pack``;
  read them with ``tokenizer.TrainingShards``), and with ``megatron: true`` the same as ``.bin``/``.idx``
- ``phases.{md,csv,json,svg}``: target vs realised weights, documents and epochs per phase
- ``manifest.json`` (written last): row format, and per phase its shards with sequence and token counts

Every step commits per unit with a receipt, so a rerun redoes only what changed (``mixture.build``).
No step holds per-document data for the whole corpus in the driver: the planner works on per-bin
token histograms, and documents are dealt to training shards by hash. A pack task holds one
training shard's token ids, once (``mixture.pack``). Output depends on the seed
and the document ids only, not on sharding or the number of workers.
"""
from mixture.build import run_mixture
from mixture.config import MixtureConfig, PhaseConfig

__all__ = ["MixtureConfig", "PhaseConfig", "run_mixture"]
