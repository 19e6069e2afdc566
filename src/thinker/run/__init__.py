"""One run of the pipeline: validate -> train -> eval -> record, the stages and the reuse of a finished
identical run (docs/runs.md, docs/architecture.md)."""
