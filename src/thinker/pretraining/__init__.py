"""The model-agnostic pieces of the pretraining path (method=pretrain; docs/decisions/0010-cognate-pretraining-path.md).

Pretraining builds a model from scratch on the shared Lightning run (backends/local/lightning_run.py). What
lives here does not depend on the model being pretrained:

    blocks    pretraining text -> fixed-length token blocks
    grokfast  GrokFast-EMA gradient filter and the AdamW that applies it (optimizer=grokfast; torch)
    module    the LightningModule: next-token loss, held-out loss and answer accuracy
    run       pretrain(): the model, the data task's pretraining examples, the run

The data's records become text through its task (thinker.tasks: pretraining_example), never by format name
here. This package's __init__ imports nothing, so the config check never pays for torch.
"""
