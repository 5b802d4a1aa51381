"""Training: the LightningModule, optimizers and schedulers, callbacks, loggers, the Trainer."""
