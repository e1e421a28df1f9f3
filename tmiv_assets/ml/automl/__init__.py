"""AutoML: Optuna search over the model catalog, ensembles, the PyTorch MLP and evaluation."""
