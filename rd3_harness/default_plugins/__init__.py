"""Built-in features shipped as plugins: the random-real baseline, core datasets, models and
protocols."""
