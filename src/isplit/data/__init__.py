"""Data: data sets (Fashion-MNIST, image folders, torchvision's), preprocessing, loaders."""

from isplit.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SYSTEM_DIR,
    ArrayDataset,
    BadImage,
    ImageFileDataset,
    LabelledDataset,
    Preprocess,
    SubsetDataset,
    limit_dataset,
    load_dataset,
    make_loader,
    to_device,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "ArrayDataset",
    "BadImage",
    "ImageFileDataset",
    "LabelledDataset",
    "Preprocess",
    "SubsetDataset",
    "limit_dataset",
    "load_dataset",
    "make_loader",
    "to_device",
]
