"""A corpus-cleaning pipeline for LLM pretraining data: stages on Ray, each writing Parquet shards."""
