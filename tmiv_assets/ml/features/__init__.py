"""Feature engineering, the model preprocessor and feature selection."""
