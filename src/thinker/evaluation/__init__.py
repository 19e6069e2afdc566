"""Evaluation of claim extraction: parse completions, generate, score, report.

claim_schema (parse/format the claim format), samples (SciFact dev claims -> prompts and gold completions),
generate (the local Hugging Face generator), matching and metrics (the scores), runner (generate + score +
predictions file), report (the stdout table). The runner takes any `generate(prompts) -> completions`
function, so every backend is scored by the same code.
"""
