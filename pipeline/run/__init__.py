"""Running a job: its context (`context`), the one shard path (`shard`), the summaries (`summary`), the heartbeat
(`heartbeat`), the executors that schedule shards (`executors`, `local`, `ray_executor`) and the driver
(`job.run_job`)."""
