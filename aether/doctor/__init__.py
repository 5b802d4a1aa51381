"""The dataset doctor: detection, checks, statistics and recommendations."""
