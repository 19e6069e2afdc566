"""The config fingerprints of the shipped options, pinned: a refactor of conf/ or of the code that reads it
(optimizers and loggers by `_target_`, tasks, ...) must leave them as they are, so re-launched sweeps still
reuse their finished runs (docs/sweeps.md: a job whose fingerprint matches a finished run is reused).

A deliberate change to what trains (a new default, a new hashed input) updates these values in the same commit.
"""

from __future__ import annotations

import pytest
from conftest import compose

from thinker.tracking import file_hashes
from thinker.tracking.fingerprint import config_fingerprint

DEFAULT = "30e53e40e8029378a6b313f1f1e272049932c7f213ce14cc8fdc94d983dcaff2"

# computed before the refactors they guard (5ae594d and b339de2's parent): optimizers and loggers by `_target_`,
# data tasks, the shared Lightning run; each key is a command line's overrides
PINNED = {
    (): DEFAULT,
    ("backend=tinker",): "f0eeb9a11915a2db25ce5e21472c2e61e365a589929e15b5d8fedee8a582ef1c",
    ("data=chat",): "ec5a3ccc0e2888ca5859d3cf8390a6fa7eb639ee8e29951e899a3d9213dda489",
    ("data=gsm8k",): "dd178cfea48643c70b5fe4194bb8266dae2efc7bb61f15d2eb9f0926ad36bb09",
    ("data=jsonl",): "60ddda9ae5130818cf55979be84455ccccf99a64835715d1caf668ba790e91fa",
    ("data=sample",): DEFAULT,
    ("data=scifact",): "3db390efc2655b5e67166a1ee35ae8f56708d8a2d057da4388e0fcd1615560c7",
    ("experiment=cognate_pretrain",): "6a5b91d14fa100f864310d3e40a81ca6e1b2b31a49fa0f884e1136a67b778444",
    ("experiment=scifact_claim_extractor",): "73121115b8d4a5bd504740f94cda346dacee26395ecac1609d02348445fc5280",
    ("logger=mlflow",): DEFAULT,
    ("logger=none",): DEFAULT,
    ("method=full",): "9a8a26252c292af8b41fc84f99de1589f36a06429657d7bcd38c0605a392e727",
    ("method=lora",): "40d9e0594a5f8b679f40e48ce82a1933f388a25d0552174cf0d1689a28ba4661",
    ("method=qlora",): DEFAULT,
    ("optimizer=adam",): "a8532e4835e460a84e07e8abda1411809e3693e0dc093a7a97db2fe0ca9b3890",
    ("optimizer=adamw",): DEFAULT,
    ("optimizer=adamw_8bit",): "ae9c2214a0e2e4727b61e3a701b206b9cb07579a6722135361614b7c8c2bdfbd",
    ("optimizer=grokfast",): "7847ab54911b4371ead06fe30cc1299879546aff153739fd2b0dcbea3f9ddcd0",
    ("optimizer=paged_adamw",): "aab5e4a34b8b4100d221b9cf9189748cb4eef04ea0e3be171bd548a1644a2e63",
    ("optimizer=sgd",): "d8a9b101da50eec5aba6dd2f5238202f21d8ff1be2ba9dcfa6e5b2376355ce1c",
    ("trainer=cpu",): "a50f73f92faa129af9eebe8279df349f3d515dfc0025c15204576319fc0e3af5",
    ("trainer=gpu",): "8a959515898411a81130c2d7edbd6644bad0a4b5913b835aa0f98c69b19df0c7",
    ("backend=provider", "provider=openai"): "3e22513eb09c9d3be63c0743882e81935c5e0b2e025f866238f05f5aa55c6490",
    ("data=chat", "backend=tinker"): "3b2d0424050c904a6cd7b128437521f957de266e7402d35511c4e86509cca38f",
    ("data=chat", "method=lora", "trainer.train_on_inputs=enabled"):
        "21fa65c6d11864810eb8c8634e328aa130c22da08e5c692b4d300b30b79326d2",
    ("data=gsm8k", "method=pretrain", "model=cognate-25m"):
        "ff90a45475739dd31c45fd8c61ff922f348533538f7e1d482267cfc7fb51833b",
    ("data=hotpotqa", "method=pretrain", "model=cognate-25m", "optimizer=grokfast"):
        "c27f388510912b3fbe3531b5dc9d9b579d28f65b4c31c0dedde225314e064a38",
}


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(file_hashes, "_memory", {})


@pytest.mark.parametrize("overrides", list(PINNED), ids=lambda o: " ".join(o) or "default")
def test_the_fingerprint_of_a_shipped_option_is_unchanged(overrides):
    assert config_fingerprint(compose(list(overrides))) == PINNED[overrides]
