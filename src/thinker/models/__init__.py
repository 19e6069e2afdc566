"""Models: where weights come from (the builtin tiny model, a local folder, a hub id) and how they load.

Every submodule imports torch, transformers, tokenizers and bitsandbytes inside its functions, so importing
thinker.models.* stays light for config composition and validation.
"""
