"""The `queue` execution backend: runs of streams as jobs in Postgres, run by workers anywhere.

`[execution] backend = "queue"` turns `pipeline sync`, `backfill` and `schedule` into producers
of jobs and `pipeline worker` into their consumer, on procrastinate (a task queue kept in the
same Postgres: `pipeline_queue` schema, revision 0006). A job is one run of one stream
(`pipeline.run.StreamRun`, as the local backend runs it); what it wrote is in `sync_runs` under
the job's run id, as always.

- `app`: the procrastinate app, the one task and its job arguments, locks and retries;
- `defer`: making jobs (a command's, a schedule's firing once however many schedulers);
- `worker`: `pipeline worker`, with its stop, reconnects and the retry of dead workers' jobs;
- `waiting`: `pipeline sync` waiting for its jobs, and their outcomes;
- `jobs`: what `pipeline status` shows of the queue.
"""
