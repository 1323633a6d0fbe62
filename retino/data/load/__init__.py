"""Loading for training and evaluation: the Dataset over a folder in the lab's layout
(RetinopathyDataset), its transforms, the loaders, decoding on the GPU, and the data's
identity (digest) that a run records."""
