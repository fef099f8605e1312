"""Learn from the results store: features (records + accelerator spec table + roofline prior), predictors with
calibrated 90% intervals, honest grouped evaluation, and recommendations. See docs/learn.md."""
