"""Data: the lab's CSV layout, the Dataset over it (RetinopathyDataset), transforms, the demo
generator and the offline preparation of Kaggle images. Light on purpose (no torch import here),
so that the preparation's worker processes start fast."""
