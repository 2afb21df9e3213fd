"""Scale-out: a device mesh over the index rows, sharded exact search, multi-host start-up, seed-shard merging."""
