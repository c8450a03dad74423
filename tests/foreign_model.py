"""A model archive whose handler this project did not write, for the end-to-end tests.

The handler is pytorch/serve's example `text_classification_with_scriptable_tokenizer`
(copied with attribution into tests/fixtures/foreign_text/). Its payload is plain text
(bytes, decoded as UTF-8); it hands the model a list of strings, so the model is
TorchScript that tokenizes inside itself. The model here is built from code with seeded
weights (no download): words hashed into buckets, an EmbeddingBag and a linear layer,
two classes as in the example's index_to_name.json.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "foreign_text"
MODEL_NAME = "textclf"
BUCKETS = 4096


class HashedTextClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(BUCKETS, 64, mode="mean")
        self.hidden = torch.nn.Linear(64, 256)
        self.out = torch.nn.Linear(256, 2)

    def forward(self, texts: List[str]) -> torch.Tensor:
        ids: List[int] = []
        offsets: List[int] = []
        for text in texts:
            offsets.append(len(ids))
            for word in text.split():
                h = 0
                for ch in word:
                    h = (h * 31 + ord(ch)) % 1000003
                ids.append(h % 4096)
            if len(ids) == offsets[-1]:
                ids.append(0)  # empty text: one padding token
        x = self.embed(torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long))
        return self.out(torch.relu(self.hidden(x)))


def build_archive(dest: Path, config_yaml: str | None = None, fixture: Path = FIXTURE) -> Path:
    """dest/textclf.mar built by torch-model-archiver; `config_yaml`: an optional
    model-config.yaml carried by the archive; `fixture`: where handler.py and
    index_to_name.json come from."""
    dest.mkdir(parents=True, exist_ok=True)
    work = dest / ".build"
    work.mkdir(exist_ok=True)
    torch.manual_seed(0)
    scripted = torch.jit.script(HashedTextClassifier().eval())
    scripted.save(str(work / "model.pt"))
    cmd = [
        str(Path(sys.executable).parent / "torch-model-archiver"),
        "--model-name", MODEL_NAME, "--version", "1.0",
        "--serialized-file", str(work / "model.pt"),
        "--handler", str(fixture / "handler.py"),
        "--extra-files", str(fixture / "index_to_name.json"),
        "--export-path", str(dest), "--force",
    ]
    if config_yaml is not None:
        (work / "model-config.yaml").write_text(config_yaml)
        cmd += ["--config-file", str(work / "model-config.yaml")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return dest / f"{MODEL_NAME}.mar"
