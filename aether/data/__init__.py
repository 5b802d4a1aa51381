"""Data: adapters that index a dataset, image checks, splitting, transforms, the DataModule."""
