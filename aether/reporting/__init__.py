"""What a run leaves behind for people: metrics.json, plots, report.md."""
