"""mnv2bench core library: datasets, models, training strategies, cache and the study."""

__version__ = "0.1.0"
