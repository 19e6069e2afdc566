"""Rewards for reinforcement learning (objective=grpo; docs/objectives.md, "Reinforcement learning").

A reward is a callable `(prompt, completion, record) -> float`: `prompt` is the text the model continued,
`completion` what it wrote, `record` the data task's example (a GSM8K record's reference answer, a claim
record's source). A batch form takes lists and returns a list (`batched = True` on the callable). Shipped
rewards are conf/reward/*.yaml options (each a `_target_` into thinker.rewards.builtin); `objective.rewards`
weighs several of them, or a callable of one's own named by its dotted path (thinker.rewards.spec).

Standard library only: the config check resolves rewards without importing torch.
"""
