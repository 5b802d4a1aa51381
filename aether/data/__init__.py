"""Data: dataset formats (aether.data.formats) that detect and index a dataset, image checks,
splitting, transforms, the DataModule."""
