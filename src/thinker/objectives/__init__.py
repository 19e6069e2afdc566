"""What training optimises beyond next-token loss, as plain maths every backend shares (docs/objectives.md):
the preference losses of objective=dpo (dpo_loss). No Lightning here, so backend=local's module and
backend=tinker's custom loss compute the same numbers from the same functions."""
