"""Readers for real datasets in their published formats (no pickle anywhere), and their registry glue.

Each `load_*` follows the loader contract `load(params, *, root, limit) -> Dataset`; the root defaults to
$DIFFCLI_DATA/<name> and a missing dataset is one sentence naming where to put it and its manifest.
"""
