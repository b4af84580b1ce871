"""Training the bottleneck on cached head outputs: the loss falls; the tail stays frozen unless
fine-tuned."""

import copy

import torch

from isplit.graph import ModelGraph
from isplit.models import load_model
from isplit.validation import Settings, train_bottleneck
from isplit.validation.bottleneck import Bottleneck


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    loaded = load_model("demo-vgg16")
    graph = ModelGraph(loaded.model, (1, 32, 32))
    head, tail = graph.split("features.13")
    x = torch.randn(256, 1, 32, 32)
    with torch.no_grad():
        z = head(x)
        y = loaded.model(x).argmax(1)  # labels the network can fit
    b = Bottleneck(z.shape, ratio=8)
    losses = train_bottleneck(tail, b, z, y, Settings(epochs=4, batch_size=64), "cpu")
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    assert not any(p.requires_grad for p in tail.parameters())  # the tail stayed frozen


def test_distillation_and_tail_finetuning():
    torch.manual_seed(0)
    loaded = load_model("demo-vgg16")
    head, tail = ModelGraph(loaded.model, (1, 32, 32)).split("features.33")
    x = torch.randn(128, 1, 32, 32)
    with torch.no_grad():
        z, teacher = head(x), loaded.model(x)
    y = teacher.argmax(1)
    tuned = copy.deepcopy(tail)
    before = [p.clone() for p in tuned.parameters()]
    model_before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    settings = Settings(epochs=3, batch_size=32, distill=1.0, finetune="tail")
    losses = train_bottleneck(tuned, Bottleneck(z.shape), z, y, settings, "cpu", teacher)
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.parameters()))
    after = loaded.model.state_dict()  # the copy was tuned, not the user's model
    assert all(torch.equal(v, after[k]) for k, v in model_before.items())
