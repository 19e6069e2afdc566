"""Data: the claim format, reading and splitting examples, tokenisation with loss weights, packing."""
