"""Loopback servers that follow the hosted providers' published fine-tuning API shapes (OpenAI, Together,
Fireworks), driven through the providers' real SDKs with their base URL pointed at 127.0.0.1."""
