"""The model-agnostic pieces of the pretraining path (method=pretrain; docs/decisions/0010-cognate-pretraining-path.md).

Pretraining builds a model from scratch in its own loop, which shares nothing with fine-tuning. What lives
here does not depend on the model being pretrained:

    grokfast        GrokFast-EMA gradient filter and the AdamW that applies it (optimizer=grokfast; torch)
    reasoning_data  GSM8K- and HotpotQA-format records -> pretraining text, prompt and gold answer, answer
                    checks, and the cross-field dataset validator (standard library only)

This package's __init__ imports nothing, so the config check and the validate stage (which imports
reasoning_data for its schema validator) never pay for torch.
"""
