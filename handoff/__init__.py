"""The handoff to Temporal: what the API commits (a job, a canvas run, a webhook's signal, an outbound delivery)
is started or sent at once (`starts`), and whatever was left undone is finished by the workers' `sweep`, which also
deletes the files of jobs that ended without a result (`orphan_files`)."""
