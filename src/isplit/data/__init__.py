"""Data: data sets (Fashion-MNIST, image folders, torchvision's), preprocessing, loaders.

preprocess.py        Preprocess: an image becomes a model input
base.py              LabelledDataset and its in-memory / subset kinds, BadImage
builtin.py           Fashion-MNIST and digits
folders.py           image folders, Tiny-ImageNet's layout
torchvision_sets.py  torchvision:NAME
load.py              load_dataset: a data set by name
loaders.py           batches (make_loader), to_device
"""

from isplit.data.base import (
    ArrayDataset,
    BadImage,
    LabelledDataset,
    SubsetDataset,
    limit_dataset,
)
from isplit.data.builtin import FASHION_MNIST_CLASSES, FASHION_MNIST_SYSTEM_DIR
from isplit.data.folders import ImageFileDataset
from isplit.data.load import load_dataset
from isplit.data.loaders import make_loader, to_device
from isplit.data.preprocess import Preprocess, describe_preprocess
from isplit.data.relabel import RelabelledDataset, match_classes

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "ArrayDataset",
    "BadImage",
    "ImageFileDataset",
    "LabelledDataset",
    "Preprocess",
    "RelabelledDataset",
    "SubsetDataset",
    "describe_preprocess",
    "limit_dataset",
    "load_dataset",
    "make_loader",
    "match_classes",
    "to_device",
]
