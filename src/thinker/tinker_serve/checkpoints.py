"""The state folder: training runs, `tinker://` paths and the weights saved under them.

Layout (default state folder `models/tinker-serve/`):

    runs/<model id, %-quoted>/run.json                          one per training run (a training model)
    runs/<model id>/weights/<name>/                             save_state: adapter + optimizer state
    runs/<model id>/sampler_weights/<name>/                     save_weights_for_sampler: adapter
    ephemeral/<sampling session id>/                            save_weights_and_get_sampling_client;
                                                                cleared when a server starts
    tokenizers/<base model>/                                    the tokenizers get_info points at

A checkpoint folder is a standard PEFT adapter folder (adapter_model.safetensors, adapter_config.json) plus
checkpoint.json (base model, LoRA settings, time, user metadata) and, for `weights/`, optimizer.safetensors
(AdamW's moments and step per parameter). Everything is written to a temp folder and renamed into place, so
a killed server leaves whole checkpoints only; a restarted server on the same folder loads them.

Paths mimic Tinker's: `tinker://<model id>/weights/<name>` and `tinker://<model id>/sampler_weights/<name>`
(the SDK parses exactly three parts, so a name has no `/`).
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from thinker.tinker_serve.errors import NotFound, UserError

SCHEME = "tinker://"
SEGMENTS = {"weights": "training", "sampler_weights": "sampler"}
RUN_FILE = "run.json"
META_FILE = "checkpoint.json"
ADAPTER_FILE = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass(frozen=True)
class CheckpointRef:
    model_id: str
    segment: str  # "weights" | "sampler_weights"
    name: str

    @property
    def tinker_path(self) -> str:
        return f"{SCHEME}{self.model_id}/{self.segment}/{self.name}"

    @property
    def checkpoint_id(self) -> str:
        return f"{self.segment}/{self.name}"

    @property
    def checkpoint_type(self) -> str:
        return SEGMENTS[self.segment]


def check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise UserError(f"checkpoint name {name!r} is not valid: use letters, digits, '-', '_' and '.', no '/'")
    return name


def parse_tinker_path(path: str) -> CheckpointRef:
    if not isinstance(path, str) or not path.startswith(SCHEME):
        raise UserError(f"{path!r} is not a tinker:// path (tinker://<model id>/weights/<name>)")
    parts = path[len(SCHEME):].split("/")
    if len(parts) != 3 or not parts[0] or parts[1] not in SEGMENTS:
        raise UserError(f"{path!r} is not a checkpoint path: expected tinker://<model id>/weights/<name> or "
                        "tinker://<model id>/sampler_weights/<name>")
    return CheckpointRef(parts[0], parts[1], check_name(parts[2]))


def parse_checkpoint_id(model_id: str, checkpoint_id: str) -> CheckpointRef:
    segment, _, name = checkpoint_id.partition("/")
    if segment not in SEGMENTS or not name:
        raise UserError(f"checkpoint id {checkpoint_id!r} is not weights/<name> or sampler_weights/<name>")
    return CheckpointRef(model_id, segment, check_name(name))


@dataclass
class Checkpoint:
    ref: CheckpointRef
    folder: Path
    meta: dict[str, Any]

    @property
    def has_optimizer(self) -> bool:
        return (self.folder / OPTIMIZER_FILE).is_file()

    def adapter(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / ADAPTER_FILE))

    def optimizer(self) -> dict[str, Any] | None:
        from safetensors.torch import load_file

        return load_file(str(self.folder / OPTIMIZER_FILE)) if self.has_optimizer else None

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def api(self) -> dict[str, Any]:
        """The SDK's Checkpoint shape."""
        return {
            "checkpoint_id": self.ref.checkpoint_id,
            "checkpoint_type": self.ref.checkpoint_type,
            "time": self.meta.get("time"),
            "tinker_path": self.ref.tinker_path,
            "size_bytes": self.size_bytes(),
            "public": False,
            "user_metadata": self.meta.get("user_metadata"),
            "expires_at": self.meta.get("expires_at"),
        }


class CheckpointStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------- training runs

    def run_dir(self, model_id: str) -> Path:
        return self.root / "runs" / urllib.parse.quote(model_id, safe="")

    def write_run(self, record: dict[str, Any]) -> None:
        from thinker.tracking.atomic import atomic_write_json

        atomic_write_json(self.run_dir(record["training_run_id"]) / RUN_FILE, record)

    def read_run(self, model_id: str) -> dict[str, Any]:
        path = self.run_dir(model_id) / RUN_FILE
        if not path.is_file():
            raise NotFound(f"training run {model_id!r} does not exist on this server (state folder {self.root})")
        return json.loads(path.read_text(encoding="utf-8"))

    def list_runs(self) -> list[dict[str, Any]]:
        runs = []
        for path in sorted((self.root / "runs").glob(f"*/{RUN_FILE}")):
            try:
                runs.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(runs, key=lambda r: str(r.get("created", "")), reverse=True)

    # ---------------------------------------------------------- checkpoints

    def folder(self, ref: CheckpointRef) -> Path:
        return self.run_dir(ref.model_id) / ref.segment / ref.name

    def ephemeral_folder(self, sampling_session_id: str) -> Path:
        return self.root / "ephemeral" / urllib.parse.quote(sampling_session_id, safe="")

    def clear_ephemeral(self) -> None:
        shutil.rmtree(self.root / "ephemeral", ignore_errors=True)

    def save(self, folder: Path, adapter: dict[str, Any], peft_config: Any, meta: dict[str, Any],
             optimizer: dict[str, Any] | None = None, overwrite: bool = True) -> None:
        from safetensors.torch import save_file

        from thinker.tracking.atomic import atomic_directory, atomic_write_json

        if folder.exists() and not overwrite:
            raise UserError(f"checkpoint {meta.get('tinker_path', folder.name)} exists already: pick another name "
                            "or save with overwrite=True")
        with atomic_directory(folder) as tmp:
            save_file(adapter, str(tmp / ADAPTER_FILE))
            peft_config.save_pretrained(str(tmp))
            if optimizer is not None:
                save_file(optimizer, str(tmp / OPTIMIZER_FILE))
            atomic_write_json(tmp / META_FILE, meta)

    def get(self, ref: CheckpointRef) -> Checkpoint:
        folder = self.folder(ref)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise NotFound(f"checkpoint {ref.tinker_path} does not exist on this server (state folder {self.root}); "
                           "list the run's checkpoints with RestClient().list_checkpoints(model_id)")
        return Checkpoint(ref, folder, json.loads(meta_path.read_text(encoding="utf-8")))

    def resolve(self, tinker_path: str) -> Checkpoint:
        return self.get(parse_tinker_path(tinker_path))

    def list_checkpoints(self, model_id: str) -> list[Checkpoint]:
        found = []
        for segment in SEGMENTS:
            for meta in sorted((self.run_dir(model_id) / segment).glob(f"*/{META_FILE}")):
                try:
                    found.append(self.get(CheckpointRef(model_id, segment, meta.parent.name)))
                except (NotFound, OSError, ValueError):
                    continue
        return sorted(found, key=lambda c: str(c.meta.get("time", "")))

    def delete(self, ref: CheckpointRef) -> None:
        checkpoint = self.get(ref)
        shutil.rmtree(checkpoint.folder)


def checkpoint_meta(ref: CheckpointRef, *, base_model: str, lora: dict[str, Any], steps: int,
                    user_metadata: dict[str, Any] | None, ttl_seconds: int | None) -> dict[str, Any]:
    created = now()
    return {
        "tinker_path": ref.tinker_path,
        "checkpoint_type": ref.checkpoint_type,
        "model_id": ref.model_id,
        "name": ref.name,
        "base_model": base_model,
        "lora": lora,
        "optimizer_steps": steps,
        "time": iso(created),
        "expires_at": iso(created + timedelta(seconds=ttl_seconds)) if ttl_seconds else None,
        "user_metadata": {str(k): str(v) for k, v in (user_metadata or {}).items()} or None,
    }
