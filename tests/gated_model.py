"""A network that torch.fx cannot trace whole: its ``Gate`` submodule has data-dependent Python
control flow. With ``Gate`` as a leaf module it traces (tests of --leaf-module; ``make`` is its
``package.module:factory`` for the command line)."""

from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent: torch.fx cannot trace into it
            return x * 2
        return -x


class Gated(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 3):
        super().__init__()
        self.c1 = nn.Conv2d(channels, 8, 3, padding=1)
        self.r1 = nn.ReLU()
        self.gate = Gate()
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.r2 = nn.ReLU()
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        x = self.r2(self.c2(self.gate(self.r1(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


def make() -> Gated:
    """One grey channel, ten classes: the digits data set's."""
    return Gated(channels=1, classes=10)
