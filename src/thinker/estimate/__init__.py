"""Before a run: how many tokens it trains on, how long that takes and what it costs, on every backend
(docs/costs.md). After it: what it took and cost, next to the estimate.

- tokens: the run's own data code (thinker.data.prepare.tokenized_data and the step order of
  thinker.data.batches) with the model's tokenizer, so the estimate is the tokens the run trains on;
- prices: conf/prices/<backend or provider>.yaml, each with its source and date (thinker.estimate.prices);
- time: backend=local from measured or configured tokens/s (thinker.estimate.throughput).

Light at import: the config check estimates, and imports no torch, transformers or mlflow for it.
"""
