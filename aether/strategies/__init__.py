"""Fine-tune strategies: what trains, with which parameter groups, and what gets exported."""
